//! `tether eval`: deterministic episodes of a trained policy.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::EvalArgs;
use crate::run::config::RunConfig;
use crate::run::policy_file::PolicyFile;
use crate::training::FleetSpec;
use crate::training::evaluation::evaluate;
use crate::trpo::hyperparams::TrpoConfig;

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let policy = PolicyFile::read_bin(&args.policy)?;
    let flags = toml::to_string(&args.devices.as_config_table())?;
    let config = RunConfig::<TrpoConfig>::from_toml_str(&flags, Path::new("command line"))?;
    let spec = FleetSpec::new(
        &config.devices,
        &config.timeouts,
        args.seed,
        args.devices.plant.as_deref(),
    )?;
    let report = evaluate(&spec, &policy, args.episodes.max(1), args.seed)
        .with_context(|| format!("cannot evaluate {}", args.policy.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} episodes: mean return {:.2} ± {:.2}, mean length {:.1} steps",
            report.episodes, report.mean_return, report.std_return, report.mean_length
        );
    }
    Ok(ExitCode::SUCCESS)
}
