//! `tether train` and `tether resume`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::{DeviceArgs, LinkArg, ResumeArgs, TrainArgs, interrupt_flag};
use crate::run::config::{LinkKind, RunConfig};
use crate::run::folder::RunFolder;
use crate::run::metrics::IterationMetrics;
use crate::training::{Session, SessionOutcome};
use crate::trpo::hyperparams::TrpoConfig;

/// Simulated devices when the user names none (rl-zoo3 trains with 2 environments).
const DEFAULT_SIM_DEVICES: u32 = 2;

pub fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let config = resolve_config(&args)?;
    let folder = match &args.out {
        Some(dir) => RunFolder::create(dir)?,
        None => RunFolder::create_default(Path::new("runs"), &config.plant)?,
    };
    eprintln!(
        "training {} for {} steps on {} → {}",
        config.plant,
        config.total_steps,
        describe_devices(&config),
        folder.root().display()
    );
    let root = folder.root().to_path_buf();
    let session = match Session::start(folder, config) {
        Ok(session) => session,
        Err(e) => {
            // Leave no empty run folder behind a run that never started (remove_dir only
            // removes an empty folder, so nothing written is ever lost).
            let _ = std::fs::remove_dir(&root);
            return Err(anyhow::Error::new(e).context("cannot start training"));
        }
    };
    drive(session)
}

pub fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let folder = RunFolder::open(&args.dir)?;
    let session = Session::resume(folder, args.steps).context("cannot resume the run")?;
    eprintln!(
        "resuming {} at iteration {} ({} of {} steps)",
        session.folder().root().display(),
        session.progress().iteration,
        session.progress().env_steps,
        session.config().total_steps
    );
    drive(session)
}

/// Runs the session with a progress bar and prints the one-line summary.
fn drive(mut session: Session) -> anyhow::Result<ExitCode> {
    let stop = interrupt_flag();
    let total = session.config().total_steps;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_position(session.progress().env_steps);
    let result = session.run(&stop, |m: &IterationMetrics| {
        bar.set_position(m.env_steps.min(total));
        bar.set_message(format!(
            "iter {}  return {:.1}  KL {:.4}{}{}",
            m.iteration,
            m.mean_return,
            m.kl,
            if m.accepted { "" } else { "  (step refused)" },
            m.missed_deadline_note()
                .map_or_else(String::new, |note| format!("  ({note})"))
        ));
    });
    bar.finish_and_clear();
    let folder = session.folder().root().to_path_buf();
    let outcome = result.with_context(|| {
        format!(
            "training stopped; the last checkpoint in {} is intact",
            folder.display()
        )
    })?;
    print_summary(&outcome, &folder);
    Ok(if outcome.finished {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    })
}

fn print_summary(outcome: &SessionOutcome, folder: &Path) {
    let p = &outcome.progress;
    let state = if outcome.finished {
        "done"
    } else {
        "interrupted"
    };
    eprintln!(
        "{state}: {} iterations, {} steps, {} episodes in {:.1} s; last mean return {:.1}; {} frames rejected, {} episodes discarded → {}",
        p.iteration,
        p.env_steps,
        p.episodes,
        p.wall_s,
        outcome.last_mean_return,
        p.rejections.rejected_frames,
        p.rejections.discarded_episodes,
        folder.display()
    );
    for (device, why) in &outcome.lost_devices {
        eprintln!("lost device {device}: {why}");
    }
    if !outcome.finished {
        eprintln!("continue with: tether resume {}", folder.display());
    }
}

/// Config file (if any) over the plant's preset, then command-line flags over both.
pub fn resolve_config(args: &TrainArgs) -> anyhow::Result<RunConfig<TrpoConfig>> {
    let file = match &args.config {
        Some(path) => Some(ConfigFile::read(path)?),
        None => None,
    };
    let plant = args
        .devices
        .plant
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.plant.clone()))
        .unwrap_or_else(|| "pendulum".to_string());
    let preset = TrpoConfig::for_plant(&plant).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = match &file {
        Some(f) => f.over_preset(&plant, &preset)?,
        None => RunConfig {
            plant: plant.clone(),
            total_steps: preset.total_steps as u64,
            trpo: preset,
            ..RunConfig::default()
        },
    };
    config.plant = plant;
    let names_devices = file.as_ref().is_some_and(|f| f.names_sim);
    apply_device_flags(&mut config, &args.devices, names_devices);
    if let Some(steps) = args.steps {
        config.total_steps = steps;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.trpo.seed = config.seed;
    config.trpo.total_steps = config.total_steps as usize;
    let origin = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("command line"));
    config.validate(&origin)?;
    Ok(config)
}

/// Device flags replace the configuration's device lists when given.
pub fn apply_device_flags(
    config: &mut RunConfig<TrpoConfig>,
    flags: &DeviceArgs,
    file_names_sim: bool,
) {
    let d = &mut config.devices;
    if !flags.ports.is_empty() {
        d.ports = flags.ports.clone();
    }
    if !flags.tcp.is_empty() {
        d.tcp = flags.tcp.clone();
    }
    let real = !d.ports.is_empty() || !d.tcp.is_empty();
    d.sim = match flags.sim {
        Some(n) => n,
        None if real && (!flags.ports.is_empty() || !flags.tcp.is_empty()) => 0,
        None if file_names_sim => d.sim,
        None if real => 0,
        None => DEFAULT_SIM_DEVICES,
    };
    if let Some(link) = flags.link {
        d.link = match link {
            LinkArg::Memory => LinkKind::Memory,
            LinkArg::Pty => LinkKind::Pty,
        };
    }
    if let Some(baud) = flags.baud {
        d.baud = baud;
    }
    if flags.emulate_baud {
        d.emulate_baud = true;
    }
    if flags.faults.is_some() {
        d.faults = flags.faults.clone();
    }
}

fn describe_devices(config: &RunConfig<TrpoConfig>) -> String {
    let d = &config.devices;
    let mut parts = Vec::new();
    if d.sim > 0 {
        let link = match d.link {
            LinkKind::Memory => "memory",
            LinkKind::Pty => "pty",
        };
        parts.push(format!(
            "{} simulated ({link} link{})",
            d.sim,
            if d.emulate_baud {
                format!(", {} baud", d.baud)
            } else {
                String::new()
            }
        ));
    }
    parts.extend(d.ports.iter().cloned());
    parts.extend(
        d.tcp
            .iter()
            .map(|t| format!("tcp://{}", t.trim_start_matches("tcp://"))),
    );
    if parts.is_empty() {
        "no devices".into()
    } else {
        parts.join(", ")
    }
}

/// A user's TOML file, checked strictly, kept as a table to layer over the plant preset.
struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
    plant: Option<String>,
    names_sim: bool,
}

impl ConfigFile {
    fn read(path: &Path) -> anyhow::Result<Self> {
        // Parse strictly first: unknown keys and type errors come back with file and line.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        RunConfig::<TrpoConfig>::from_toml_str(&text, path)?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let plant = table
            .get("plant")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let names_sim = table
            .get("devices")
            .and_then(|d| d.as_table())
            .is_some_and(|d| d.contains_key("sim"));
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
            plant,
            names_sim,
        })
    }

    /// The file's keys over a configuration built from the plant's preset.
    fn over_preset(
        &self,
        plant: &str,
        preset: &TrpoConfig,
    ) -> anyhow::Result<RunConfig<TrpoConfig>> {
        let base = RunConfig {
            plant: plant.to_string(),
            total_steps: preset.total_steps as u64,
            trpo: preset.clone(),
            ..RunConfig::default()
        };
        let mut merged: toml::Table =
            toml::Table::try_from(&base).context("cannot encode the preset")?;
        overlay(&mut merged, &self.table);
        let text = toml::to_string(&merged).context("cannot encode the merged configuration")?;
        let config = RunConfig::<TrpoConfig>::from_toml_str(&text, &self.path)?;
        if !self.names_sim && config.devices.sim == 0 && config.devices.count() == 0 {
            bail!("{}: no devices configured", self.path.display());
        }
        Ok(config)
    }
}

/// Recursively writes `top`'s keys over `base`.
fn overlay(base: &mut toml::Table, top: &toml::Table) {
    for (key, value) in top {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> TrainArgs {
        let cli =
            super::super::Cli::parse_from(std::iter::once("tether").chain(args.iter().copied()));
        match cli.command {
            super::super::Command::Train(t) => t,
            other => panic!("not train: {other:?}"),
        }
    }

    #[test]
    fn only_plant_means_two_simulated_devices_and_the_preset() {
        let config = resolve_config(&parse(&["train", "--plant", "cartpole"])).unwrap();
        assert_eq!(config.devices.sim, 2);
        assert_eq!(config.trpo, {
            let mut p = TrpoConfig::for_plant("cartpole").unwrap();
            p.seed = 0;
            p
        });
        assert_eq!(config.total_steps, 100_000);
    }

    #[test]
    fn ports_replace_simulated_devices_and_flags_override() {
        let config = resolve_config(&parse(&[
            "train",
            "--port",
            "/dev/ttyACM0",
            "--steps",
            "5000",
            "--seed",
            "7",
        ]))
        .unwrap();
        assert_eq!(config.devices.sim, 0);
        assert_eq!(config.devices.ports, vec!["/dev/ttyACM0".to_string()]);
        assert_eq!(
            (config.total_steps, config.seed, config.trpo.seed),
            (5000, 7, 7)
        );
    }

    #[test]
    fn config_file_layers_over_the_preset_and_flags_over_the_file() {
        let dir = std::env::temp_dir().join(format!("tether-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "plant = \"pendulum\"\nseed = 3\n[trpo]\ntarget_kl = 0.02\n[devices]\nsim = 4\n",
        )
        .unwrap();
        let mut args = parse(&["train", "--seed", "9"]);
        args.config = Some(path.clone());
        let config = resolve_config(&args).unwrap();
        let preset = TrpoConfig::for_plant("pendulum").unwrap();
        assert_eq!(config.trpo.target_kl, 0.02);
        assert_eq!(
            config.trpo.gamma, preset.gamma,
            "untouched keys keep the preset"
        );
        assert_eq!(config.devices.sim, 4);
        assert_eq!(config.seed, 9);

        std::fs::write(&path, "[trpo]\ntarget_kll = 0.02\n").unwrap();
        let err = resolve_config(&args).unwrap_err().to_string();
        assert!(
            err.contains("target_kll") && err.contains("run.toml"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_plant_is_a_clear_error() {
        let err = resolve_config(&parse(&["train", "--plant", "segway"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("segway"), "{err}");
    }
}
