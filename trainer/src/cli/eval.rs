//! `tether eval`: deterministic episodes of a trained policy.

use std::process::ExitCode;

use anyhow::Context;

use super::EvalArgs;
use super::train::apply_device_flags;
use crate::run::config::RunConfig;
use crate::run::export::PolicyFile;
use crate::training::FleetSpec;
use crate::training::evaluation::evaluate;
use crate::trpo::hyperparams::TrpoConfig;

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let policy = PolicyFile::read_bin(&args.policy)?;
    let mut config = RunConfig::<TrpoConfig> {
        plant: args
            .devices
            .plant
            .clone()
            .unwrap_or_else(|| "pendulum".into()),
        seed: args.seed,
        ..RunConfig::default()
    };
    apply_device_flags(&mut config, &args.devices, false);
    let spec = FleetSpec::from_config(&config).map_err(anyhow::Error::msg)?;
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
