//! `tether train` and `tether resume`.
//!
//! A new run asks its devices first: the plant they report in the handshake decides the
//! preset, the configuration and the run folder's name. A plant named with `--plant` (or
//! `plant` in the config file) is a check on what the devices report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressStyle};

use super::{DeviceArgs, ResumeArgs, TrainArgs, interrupt_flag, overlay};
use crate::run::config::{InitPolicy, LinkKind, RunConfig, move_keys_out_of_trpo};
use crate::run::folder::RunFolder;
use crate::run::metrics::IterationMetrics;
use crate::training::fleet::{Fleet, FleetError, FleetSpec};
use crate::training::preset::{GENERIC, Preset};
use crate::training::warm_start::WarmStart;
use crate::training::{Session, SessionOutcome};
use crate::trpo::hyperparams::TrpoConfig;

pub fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let request = TrainRequest::read(&args)?;
    let warm = request.warm_start()?;
    // Caught from here on: connecting devices (starting QEMU ones) takes seconds, and a
    // Ctrl-C meanwhile must stop them, not kill tether on the spot.
    let stop = interrupt_flag();
    let fleet = Fleet::connect(&request.fleet_spec()?).map_err(|e| match e {
        FleetError::PlantMismatch { .. } => anyhow!(
            "{e}; drop --plant (and `plant` from the config file) to train the plant the \
             devices report"
        ),
        other => anyhow::Error::new(other),
    });
    let fleet = fleet.context("cannot start training")?;
    if stop.load(Ordering::SeqCst) {
        eprintln!("interrupted before training started; no run folder was made");
        return Ok(ExitCode::from(130)); // dropping the fleet stops the devices
    }
    let resolved = request.config_for(fleet.plant.name.as_str())?;
    if let Some(notice) = &resolved.notice {
        eprintln!("{notice}");
    }
    let config = resolved.config;
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
    if let Some(warm) = &warm {
        eprintln!("starting from {}", warm.describe());
    }
    let root = folder.root().to_path_buf();
    let session = match Session::start_warm(folder, config, fleet, warm.as_ref()) {
        Ok(session) => session,
        Err(e) => {
            // Leave no empty run folder behind a run that never started (remove_dir only
            // removes an empty folder, so nothing written is ever lost).
            let _ = std::fs::remove_dir(&root);
            return Err(anyhow::Error::new(e).context("cannot start training"));
        }
    };
    drive(session, &stop)
}

pub fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let stop = interrupt_flag();
    let folder = RunFolder::open(&args.dir)?;
    let session = Session::resume(folder, args.steps).context("cannot resume the run")?;
    eprintln!(
        "resuming {} at iteration {} ({} of {} steps)",
        session.folder().root().display(),
        session.progress().iteration,
        session.progress().env_steps,
        session.config().total_steps
    );
    drive(session, &stop)
}

/// Runs the session with a progress bar and prints the one-line summary.
fn drive(mut session: Session, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let total = session.config().total_steps;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_position(session.progress().env_steps);
    let result = session.run(stop, |m: &IterationMetrics| {
        bar.set_position(m.env_steps.min(total));
        bar.set_message(format!(
            "iter {}  return {:.1}  KL {:.4}{}{}{}{}",
            m.iteration,
            m.mean_return,
            m.kl,
            if m.accepted { "" } else { "  (step refused)" },
            m.evaluation_note()
                .map_or_else(String::new, |note| format!("  ({note})")),
            m.missed_deadline_note()
                .map_or_else(String::new, |note| format!("  ({note})")),
            m.rate_limit_note()
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
    // A checkpoint is written at the end of every iteration: a run interrupted before
    // its first one has nothing to resume.
    if !outcome.finished && p.iteration > 0 {
        eprintln!("continue with: tether resume {}", folder.display());
    }
}

/// What `tether train` was asked for, before the devices say which plant they control: the
/// config file (if any) and the command-line flags.
pub struct TrainRequest {
    file: Option<ConfigFile>,
    /// `--plant`, else the file's `plant`: what the devices must report.
    named_plant: Option<String>,
    devices: DeviceArgs,
    steps: Option<u64>,
    seed: Option<u64>,
    /// `--init`, which overrides the file's `init`.
    init: Option<PathBuf>,
    /// `--init-policy`, which overrides the file's `init_policy`.
    init_policy: Option<InitPolicy>,
    /// Labels configuration errors: the file, or "command line".
    origin: PathBuf,
}

/// A run's configuration, and the notice to print about how it was chosen.
#[derive(Debug)]
pub struct ResolvedConfig {
    /// The configuration, validated.
    pub config: RunConfig<TrpoConfig>,
    /// Said once when the plant has no preset and the generic one was taken.
    pub notice: Option<String>,
}

impl TrainRequest {
    /// Reads the config file (strictly: unknown keys are errors with file and line).
    pub fn read(args: &TrainArgs) -> anyhow::Result<Self> {
        let file = args.config.as_deref().map(ConfigFile::read).transpose()?;
        let named_plant = args
            .devices
            .plant
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.plant.clone()));
        Ok(TrainRequest {
            file,
            named_plant,
            devices: args.devices.clone(),
            steps: args.steps,
            seed: args.seed,
            init: args.init.clone(),
            init_policy: args.init_policy,
            origin: args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("command line")),
        })
    }

    /// The devices to connect. The whole configuration is checked first, so a bad value is
    /// reported before any device is touched.
    pub fn fleet_spec(&self) -> anyhow::Result<FleetSpec> {
        let provisional = self.config_for(self.named_plant.as_deref().unwrap_or(GENERIC))?;
        let config = provisional.config;
        Ok(FleetSpec::new(
            &config.devices,
            &config.timeouts,
            config.seed,
            self.named_plant.as_deref(),
        )?
        .with_plant_params(config.plant_params_message(&self.origin)?))
    }

    /// The trained starting point (`--init`, else the file's `init`), read before any
    /// device is touched; `None`: a fresh learner.
    pub fn warm_start(&self) -> anyhow::Result<Option<WarmStart>> {
        let provisional = self.config_for(self.named_plant.as_deref().unwrap_or(GENERIC))?;
        let config = provisional.config;
        Ok(config
            .init
            .map(|path| WarmStart::load(Path::new(&path), config.init_policy))
            .transpose()?)
    }

    /// The run's configuration for `plant`: the preset (the file's `preset`, else the
    /// plant's own, else the generic one), the file's keys over it, the flags over both.
    pub fn config_for(&self, plant: &str) -> anyhow::Result<ResolvedConfig> {
        let chosen = self.file.as_ref().and_then(|f| f.preset.as_deref());
        let (preset, notice) = match chosen {
            Some(name) => (
                Preset::named(name).ok_or_else(|| {
                    anyhow!(
                        "{}: unknown preset `{name}`; presets are: {}",
                        self.origin.display(),
                        Preset::names().join(", ")
                    )
                })?,
                None,
            ),
            None => match Preset::named(plant) {
                Some(own) => (own, None),
                None => (Preset::generic(), Some(generic_notice(plant))),
            },
        };
        let mut table = toml::Table::try_from(&preset).context("cannot encode the preset")?;
        if let Some(file) = &self.file {
            overlay(&mut table, &file.table);
        }
        overlay(&mut table, &self.devices.as_config_table());
        table.insert("plant".into(), plant.into());
        let text = toml::to_string(&table).context("cannot encode the configuration")?;
        let mut config = RunConfig::<TrpoConfig>::from_toml_str(&text, &self.origin)?;
        if let Some(steps) = self.steps {
            config.total_steps = steps;
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(init) = &self.init {
            config.init = Some(init.display().to_string());
        }
        if let Some(which) = self.init_policy {
            config.init_policy = which;
        }
        config.validate(&self.origin)?;
        Ok(ResolvedConfig { config, notice })
    }
}

/// What a run on a plant without a preset says about the settings it took.
fn generic_notice(plant: &str) -> String {
    let generic = Preset::generic();
    format!(
        "note: plant `{plant}` has no preset; training with the `{GENERIC}` one (SB3-contrib's \
         TRPO defaults with observation normalisation, {} steps per iteration, {} steps); \
         `preset = \"<plant>\"` in a config file picks another plant's",
        generic.steps_per_iteration, generic.total_steps
    )
}

fn describe_devices(config: &RunConfig<TrpoConfig>) -> String {
    let d = &config.devices;
    let mut parts = Vec::new();
    if d.sim > 0 && d.link == LinkKind::Qemu {
        parts.push(format!("{} QEMU devices", d.sim));
    } else if d.sim > 0 {
        let link = match d.link {
            LinkKind::Memory => "memory",
            LinkKind::Pty | LinkKind::Qemu => "pty",
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

/// A user's TOML file, checked strictly, kept as a table to layer over the preset.
struct ConfigFile {
    table: toml::Table,
    plant: Option<String>,
    preset: Option<String>,
}

impl ConfigFile {
    fn read(path: &Path) -> anyhow::Result<Self> {
        // Parse strictly first: unknown keys and type errors come back with file and line.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        RunConfig::<TrpoConfig>::from_toml_str(&text, path)?;
        let mut table: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let moved =
            move_keys_out_of_trpo(&mut table).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if !moved.is_empty() {
            tracing::warn!(
                "{}: [trpo] holds the learner's settings only; `{}` read as top-level keys \
                 (move them there)",
                path.display(),
                moved.join("`, `")
            );
        }
        let text_key = |key: &str| table.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Ok(ConfigFile {
            plant: text_key("plant"),
            preset: text_key("preset"),
            table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::DEFAULT_SIM_DEVICES;
    use clap::Parser;

    fn parse(args: &[&str]) -> TrainArgs {
        let cli =
            super::super::Cli::parse_from(std::iter::once("tether").chain(args.iter().copied()));
        match cli.command {
            super::super::Command::Train(t) => t,
            other => panic!("not train: {other:?}"),
        }
    }

    fn config_for(args: &[&str], plant: &str) -> ResolvedConfig {
        TrainRequest::read(&parse(args))
            .and_then(|r| r.config_for(plant))
            .unwrap()
    }

    #[test]
    fn only_plant_means_the_default_simulated_devices_and_the_preset() {
        let resolved = config_for(&["train", "--plant", "cartpole"], "cartpole");
        let config = resolved.config;
        let preset = Preset::named("cartpole").unwrap();
        assert_eq!(config.devices.sim, DEFAULT_SIM_DEVICES);
        assert_eq!(config.trpo, preset.trpo);
        assert_eq!(config.preset.as_deref(), Some("cartpole"));
        assert_eq!(
            (config.total_steps, config.steps_per_iteration),
            (100_000, 1024)
        );
        assert_eq!(resolved.notice, None);
    }

    #[test]
    fn ports_replace_simulated_devices_and_flags_override() {
        let config = config_for(
            &[
                "train",
                "--port",
                "/dev/ttyACM0",
                "--steps",
                "5000",
                "--seed",
                "7",
            ],
            "qube",
        )
        .config;
        assert_eq!(config.devices.sim, 0);
        assert_eq!(config.devices.ports, vec!["/dev/ttyACM0".to_string()]);
        assert_eq!((config.total_steps, config.seed), (5000, 7));
        assert_eq!(config.plant, "qube");
        assert_eq!(config.trpo, Preset::named("qube").unwrap().trpo);
    }

    #[test]
    fn a_plant_without_preset_takes_the_generic_one_and_says_so() {
        let resolved = config_for(&["train", "--port", "/dev/ttyACM0"], "myrig");
        assert_eq!(resolved.config.plant, "myrig");
        assert_eq!(resolved.config.preset.as_deref(), Some(GENERIC));
        assert_eq!(resolved.config.trpo, Preset::generic().trpo);
        let notice = resolved.notice.expect("a notice");
        assert!(notice.contains("`myrig` has no preset"), "{notice}");
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
        let config = TrainRequest::read(&args)
            .and_then(|r| r.config_for("pendulum"))
            .unwrap()
            .config;
        let preset = Preset::named("pendulum").unwrap();
        assert_eq!(config.trpo.target_kl, 0.02);
        assert_eq!(
            config.trpo.gamma, preset.trpo.gamma,
            "untouched keys keep the preset"
        );
        assert_eq!(config.devices.sim, 4);
        assert_eq!(config.seed, 9);

        // `preset` picks another plant's settings; an unknown one is an error naming it.
        std::fs::write(
            &path,
            "preset = \"cartpole\"\n[devices]\nports = [\"/dev/x\"]\n",
        )
        .unwrap();
        let resolved = TrainRequest::read(&args)
            .and_then(|r| r.config_for("myrig"))
            .unwrap();
        assert_eq!(
            resolved.config.trpo,
            Preset::named("cartpole").unwrap().trpo
        );
        assert_eq!(resolved.config.devices.sim, 0);
        assert_eq!(resolved.notice, None);
        std::fs::write(&path, "preset = \"segway\"\n").unwrap();
        let err = TrainRequest::read(&args)
            .and_then(|r| r.config_for("pendulum"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown preset `segway`") && err.contains("run.toml"),
            "{err}"
        );

        // The old layout's `[trpo] steps_per_iteration` is read as the top-level key.
        std::fs::write(&path, "[trpo]\nsteps_per_iteration = 4000\n").unwrap();
        let config = TrainRequest::read(&args)
            .and_then(|r| r.config_for("pendulum"))
            .unwrap()
            .config;
        assert_eq!(config.steps_per_iteration, 4000);

        std::fs::write(&path, "[trpo]\ntarget_kll = 0.02\n").unwrap();
        let err = TrainRequest::read(&args).err().unwrap().to_string();
        assert!(
            err.contains("target_kll") && err.contains("run.toml"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A shipped qube config file (`configs/<file>`) resolved as `tether train --config`
    /// resolves it, checked valid.
    fn shipped_qube_config(file: &str) -> RunConfig<TrpoConfig> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(file);
        let mut args = parse(&["train", "--seed", "0"]);
        args.config = Some(path.clone());
        let config = TrainRequest::read(&args)
            .and_then(|r| r.config_for("qube"))
            .unwrap()
            .config;
        config.validate(&path).unwrap();
        config
    }

    /// `configs/qube-dr.toml` is what the README's sim-to-real figures were measured with:
    /// it must keep resolving to those settings (the qube preset, 7M steps, a 0.03 step,
    /// gSDE exploration redrawn every 8 steps from σ = e⁻¹ V, its ranges with half the draws
    /// at their ends, the mean of the 5 best of the policies evaluated on 240 plants every
    /// 10 iterations from 3.5M steps kept) and stay a valid run configuration.
    #[test]
    fn the_shipped_randomisation_resolves_to_the_measured_settings() {
        let config = shipped_qube_config("qube-dr.toml");
        let preset = Preset::named("qube").unwrap();
        assert_eq!(config.plant, "qube");
        assert_eq!(
            (config.total_steps, config.steps_per_iteration),
            (7_000_000, preset.steps_per_iteration)
        );
        assert_eq!(
            config.trpo,
            TrpoConfig {
                target_kl: 0.03,
                use_sde: true,
                sde_sample_freq: 8,
                log_std_init: -1.0,
                ..preset.trpo
            }
        );
        assert_eq!(config.plant_randomize["arm_damping"], [0.5, 3.0]);
        assert_eq!(config.plant_randomize["latency_steps"], [0.0, 1.0]);
        assert_eq!(config.plant_randomize.len(), 14);
        assert_eq!(config.range_end_share, 0.5);
        assert_eq!(
            (
                config.evaluation.every,
                config.evaluation.episodes,
                config.evaluation.after_steps,
                config.evaluation.average_best
            ),
            (10, 240, 3_500_000, 5)
        );
    }

    /// `configs/qube-finetune.toml` is what the README's fine-tuning figures were measured
    /// with, and must warm-start from a `configs/qube-dr.toml` run: the same policy head and
    /// hidden layers, and the measured fine-tuning settings.
    #[test]
    fn the_shipped_fine_tuning_fits_the_shipped_randomisation() {
        let pretrained = shipped_qube_config("qube-dr.toml").trpo;
        let fine = shipped_qube_config("qube-finetune.toml");
        assert_eq!(
            (
                fine.total_steps,
                fine.steps_per_iteration,
                fine.trpo.target_kl
            ),
            (150_000, 5_000, 0.01)
        );
        let head = |t: &TrpoConfig| {
            (
                t.policy_hidden.clone(),
                t.use_sde,
                t.sde_sample_freq,
                t.full_std,
                t.use_expln,
                t.normalize_observations,
            )
        };
        assert_eq!(head(&fine.trpo), head(&pretrained));
        assert!(fine.plant_params.is_empty() && fine.plant_randomize.is_empty());
        assert_eq!(fine.init_policy, InitPolicy::Best, "the deployed policy");
    }

    #[test]
    fn the_fleet_is_checked_before_connecting() {
        let spec = |args: &[&str]| TrainRequest::read(&parse(args)).and_then(|r| r.fleet_spec());
        let err = spec(&["train", "--plant", "segway"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("segway") && err.contains("simulated plants"),
            "{err}"
        );
        let err = spec(&["train", "--port", "/dev/x", "--sim", "1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("need --plant"), "{err}");
        let fleet = spec(&["train"]).unwrap();
        assert_eq!(fleet.plant.as_deref(), Some("pendulum"));
        assert_eq!(fleet.sim, DEFAULT_SIM_DEVICES);
        let fleet = spec(&["train", "--port", "/dev/x"]).unwrap();
        assert_eq!((fleet.plant, fleet.sim), (None, 0));
        let fleet = spec(&["train", "--port", "/dev/x", "--plant", "qube"]).unwrap();
        assert_eq!(fleet.plant.as_deref(), Some("qube"));
    }
}
