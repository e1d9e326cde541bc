//! `tether eval`: deterministic episodes of a trained policy.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::EvalArgs;
use crate::run::config::{PlantSection, RunConfig};
use crate::run::policy_file::PolicyFile;
use crate::training::FleetSpec;
use crate::training::evaluation::evaluate;
use crate::trpo::hyperparams::TrpoConfig;

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let policy = PolicyFile::read_bin(&args.policy)?;
    let section = match &args.config {
        Some(path) => PlantSection::read(path)?,
        None => PlantSection::default(),
    };
    let plant = args.devices.plant.clone().or(section.plant.clone());
    let flags = toml::to_string(&args.devices.as_config_table())?;
    let config = RunConfig::<TrpoConfig>::from_toml_str(&flags, Path::new("command line"))?;
    let spec = FleetSpec::new(
        &config.devices,
        &config.timeouts,
        args.seed,
        plant.as_deref(),
    )?;
    // Evaluation runs the file's plant as it is, its values, unless asked for its ranges.
    let origin = args.config.as_deref().unwrap_or(Path::new("command line"));
    if args.randomize && section.plant_randomize.is_empty() {
        anyhow::bail!(
            "--randomize: {} has no [plant_randomize] ranges to draw plants from",
            origin.display()
        );
    }
    let params = section.message(
        spec.plant.as_deref().unwrap_or("<none named>"),
        args.randomize,
        origin,
    )?;
    let spec = spec.with_plant_params(params);
    let report = evaluate(&spec, &policy, args.episodes.max(1), args.seed)
        .with_context(|| format!("cannot evaluate {}", args.policy.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} episodes: mean return {:.2} ± {:.2}, mean length {:.1} steps",
            report.episodes, report.mean_return, report.std_return, report.mean_length
        );
        if let Some(path) = &args.config {
            if args.randomize {
                println!("on plants drawn from the ranges of {}", path.display());
            } else {
                println!("on the plant of {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
