//! The iteration loop of `tether train` and `tether resume`.
//!
//! Each iteration: export the policy as f32 → every live device collects its share of the
//! step budget (uploading the new policy first) → the batch is assembled in device order →
//! one TRPO update → the metrics line (in `metrics.jsonl` and the TensorBoard events),
//! `policy.bin` and the checkpoint are written, in that order, each atomically. An interrupted run resumes from the checkpoint and redoes at most
//! the iteration it was in, which reproduces exactly because every random stream is a
//! function of (seed, iteration, device).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tether_shared::message::RunMode;
use tether_shared::{ActionSpace, PlantDescription, PolicySpec};

use super::batch::assemble;
use super::fleet::{Fleet, FleetError, FleetSpec};
use super::round_stats::RoundStats;
use super::state::{Progress, TrainingState};
use crate::rollout::pool::RoundResult;
use crate::rollout::{CollectRequest, DevicePool};
use crate::run::checkpoint::{Checkpoint, CheckpointError};
use crate::run::config::{ConfigError, RunConfig};
use crate::run::export::{ExportError, PolicyFile};
use crate::run::folder::RunFolder;
use crate::run::iteration_log::{IterationLog, IterationLogError};
use crate::run::metrics::{IterationMetrics, MetricsError};
use crate::run::plant_file::{PlantFileError, save_plant};
use crate::run::plot::plot_curves;
use crate::trpo::distribution::PolicyHead;
use crate::trpo::export::shared_spec;
use crate::trpo::hyperparams::TrpoConfig;
use crate::trpo::{StateError, Trpo};

/// Episode ids of iteration `i` start at `i × EPISODE_ID_BLOCK`, so ids never repeat
/// across iterations (a device runs far fewer episodes than this per iteration).
const EPISODE_ID_BLOCK: u64 = 1 << 16;

/// Redraw the curves every this many iterations (and at the end).
const PLOT_EVERY: u64 = 10;

/// Why a session stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Devices could not be connected.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The learner's hyperparameters are unusable.
    #[error("invalid [trpo] settings: {0}")]
    Learner(String),
    /// Writing or reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint does not fit this run.
    #[error("checkpoint does not fit the run: {0}")]
    BadCheckpoint(String),
    /// Writing the metrics failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Writing `metrics.jsonl` or the TensorBoard events failed.
    #[error(transparent)]
    IterationLog(#[from] IterationLogError),
    /// Writing the plant description failed.
    #[error(transparent)]
    PlantFile(#[from] PlantFileError),
    /// Writing the policy failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Every device was lost.
    #[error(
        "every device was lost ({0}); training cannot continue — the last checkpoint is kept, `tether resume` continues once the devices are back"
    )]
    AllDevicesLost(String),
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionOutcome {
    /// Progress at the end.
    pub progress: Progress,
    /// Whether the step budget was reached (false: interrupted).
    pub finished: bool,
    /// Devices dropped during the session, with the reason.
    pub lost_devices: Vec<(String, String)>,
    /// Mean return of the last iteration's complete episodes.
    pub last_mean_return: f64,
}

/// A run in progress.
pub struct Session {
    folder: RunFolder,
    config: RunConfig<TrpoConfig>,
    // Field order matters on drop: the pool (which stops the devices) goes before the
    // simulated boards it talks to.
    pool: DevicePool,
    _fleet_boards: Vec<tether_firmware::sim::SimHandle>,
    plant: PlantDescription,
    spec: PolicySpec,
    learner: Trpo,
    progress: Progress,
    metrics: IterationLog,
    history: Vec<IterationMetrics>,
    observer: Option<RoundObserver>,
}

/// Sees every round's per-device results before they are assembled into a batch (test hook:
/// the fault tests compare every accepted transition with the device's own record).
pub type RoundObserver = Box<dyn FnMut(&[RoundResult]) + Send>;

impl Session {
    /// Starts a new run in `folder` (which must not hold a run).
    pub fn start(
        folder: RunFolder,
        mut config: RunConfig<TrpoConfig>,
    ) -> Result<Self, SessionError> {
        config.trpo.seed = config.seed;
        config.trpo.total_steps = config.total_steps as usize;
        config.validate(&folder.config_path())?;
        let fleet = connect(&config)?;
        Self::start_with_fleet(folder, config, fleet)
    }

    /// Starts a new run in `folder` on devices already connected (the `[devices]` part of
    /// `config` is recorded but not used to connect). Used by tests that build their own
    /// simulated boards.
    pub fn start_with_fleet(
        folder: RunFolder,
        mut config: RunConfig<TrpoConfig>,
        fleet: Fleet,
    ) -> Result<Self, SessionError> {
        config.trpo.seed = config.seed;
        config.trpo.total_steps = config.total_steps as usize;
        config.validate(&folder.config_path())?;
        let head = policy_head(&fleet.plant);
        let learner = Trpo::new(fleet.plant.obs_dim as usize, head, config.trpo.clone())
            .map_err(|e| SessionError::Learner(e.to_string()))?;
        config.save(&folder.config_path())?;
        save_plant(&folder.plant_path(), &fleet.plant)?;
        let metrics = IterationLog::create(&folder)?;
        Self::assemble(
            folder,
            config,
            fleet,
            learner,
            Progress::default(),
            metrics,
            Vec::new(),
        )
    }

    /// Continues the run in `folder` from its checkpoint.
    pub fn resume(folder: RunFolder, total_steps: Option<u64>) -> Result<Self, SessionError> {
        let mut config: RunConfig<TrpoConfig> = RunConfig::load(&folder.config_path())?;
        if let Some(steps) = total_steps {
            config.total_steps = steps;
            config.trpo.total_steps = steps as usize;
            config.save(&folder.config_path())?;
        }
        let state: TrainingState = Checkpoint::load(&folder.checkpoint_path())?;
        if state.plant != config.plant {
            return Err(SessionError::BadCheckpoint(format!(
                "checkpoint is for plant `{}`, config says `{}`",
                state.plant, config.plant
            )));
        }
        let fleet = connect(&config)?;
        let head = policy_head(&fleet.plant);
        let learner = Trpo::from_state(fleet.plant.obs_dim as usize, head, state.learner)
            .map_err(|e: StateError| SessionError::BadCheckpoint(e.to_string()))?;
        save_plant(&folder.plant_path(), &fleet.plant)?;
        let (metrics, history) =
            IterationLog::open_resume(&folder, state.progress.iteration, state.progress.env_steps)?;
        Self::assemble(
            folder,
            config,
            fleet,
            learner,
            state.progress,
            metrics,
            history,
        )
    }

    fn assemble(
        folder: RunFolder,
        config: RunConfig<TrpoConfig>,
        fleet: Fleet,
        learner: Trpo,
        progress: Progress,
        metrics: IterationLog,
        history: Vec<IterationMetrics>,
    ) -> Result<Self, SessionError> {
        let spec = shared_spec(learner.policy(), learner.normalizer().is_some())
            .map_err(|e| SessionError::Learner(e.to_string()))?;
        let plant = fleet.plant.clone();
        let pool = DevicePool::new(fleet.clients);
        Ok(Session {
            folder,
            config,
            pool,
            _fleet_boards: fleet.boards,
            plant,
            spec,
            learner,
            progress,
            metrics,
            history,
            observer: None,
        })
    }

    /// Calls `observer` with every round's per-device results (see [`RoundObserver`]).
    pub fn observe_rounds(&mut self, observer: impl FnMut(&[RoundResult]) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// The run's folder.
    pub fn folder(&self) -> &RunFolder {
        &self.folder
    }

    /// The resolved configuration.
    pub fn config(&self) -> &RunConfig<TrpoConfig> {
        &self.config
    }

    /// The plant being trained.
    pub fn plant(&self) -> &PlantDescription {
        &self.plant
    }

    /// Progress so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Number of devices still in the run.
    pub fn live_devices(&self) -> usize {
        self.pool.live()
    }

    /// Runs iterations until the step budget is met or `stop` is raised (checked between
    /// iterations). `on_iteration` sees each iteration's metrics (for progress display).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut on_iteration: impl FnMut(&IterationMetrics),
    ) -> Result<SessionOutcome, SessionError> {
        let mut last_mean_return = f64::NAN;
        let result = loop {
            if self.progress.env_steps >= self.config.total_steps {
                break Ok(true);
            }
            if stop.load(Ordering::SeqCst) {
                break Ok(false);
            }
            match self.iterate() {
                Ok(metrics) => {
                    last_mean_return = metrics.mean_return;
                    on_iteration(&metrics);
                }
                Err(e) => break Err(e),
            }
        };
        // Whatever happened, leave the curves up to date.
        self.plot();
        let finished = result?;
        Ok(SessionOutcome {
            progress: self.progress.clone(),
            finished,
            lost_devices: self.pool.lost(),
            last_mean_return,
        })
    }

    /// One iteration: collect, update, record.
    fn iterate(&mut self) -> Result<IterationMetrics, SessionError> {
        let started = Instant::now();
        let iteration = self.progress.iteration;
        let live = self.pool.live();
        if live == 0 {
            let lost = self
                .pool
                .lost()
                .into_iter()
                .map(|(n, why)| format!("{n}: {why}"))
                .collect::<Vec<_>>();
            return Err(SessionError::AllDevicesLost(lost.join("; ")));
        }
        let budget = self.config.trpo.steps_per_iteration.max(1);
        let share = budget / live;
        let extra = budget % live;
        let request = CollectRequest {
            version: (iteration + 1) as u32,
            spec: self.spec.clone(),
            params: Arc::new(self.learner.export_f32()),
            first_episode: (iteration.wrapping_mul(EPISODE_ID_BLOCK)) as u32,
            seed: 0,
            mode: RunMode::Explore,
            steps: None,
            episodes: None,
            silence_timeout: Duration::from_secs_f64(self.config.timeouts.silence_s.max(0.01)),
        };
        let seed = self.config.seed;
        let results = self.pool.round(|device, rank| CollectRequest {
            seed: round_seed(seed, iteration, device as u64),
            steps: Some(share + usize::from(rank < extra)),
            ..request.clone()
        });
        if let Some(observer) = self.observer.as_mut() {
            observer(&results);
        }
        let obs_dim = self.plant.obs_dim as usize;
        let mut assembled = assemble(
            results.iter().filter_map(|r| r.outcome.as_ref().ok()),
            obs_dim,
            self.plant.action.wire_width(),
        );
        // A device dropped this round still lost frames and episodes: count them.
        for r in &results {
            assembled.rejections.add(&r.lost);
        }

        let update_started = Instant::now();
        let report = self.learner.update(&assembled.batch);
        let update_s = update_started.elapsed().as_secs_f64();

        self.progress.iteration += 1;
        self.progress.env_steps += assembled.steps as u64;
        self.progress.episodes += assembled.complete_returns.len() as u64;
        self.progress.rejections.add(&assembled.rejections);
        let iteration_s = started.elapsed().as_secs_f64();
        self.progress.wall_s += iteration_s;
        let stats = RoundStats::of(results.iter().filter_map(|r| r.outcome.as_ref().ok()));

        let mut metrics = IterationMetrics {
            iteration,
            env_steps: self.progress.env_steps,
            episodes: self.progress.episodes,
            mean_return: assembled.mean_return(),
            mean_episode_length: stats.mean_episode_length,
            rejected_frames: assembled.rejections.rejected_frames,
            discarded_episodes: assembled.rejections.discarded_episodes,
            reconnects: assembled.rejections.reconnects,
            devices_active: self.pool.live() as u32,
            wall_s: self.progress.wall_s,
            update_s,
            steps_per_s: assembled.steps as f64 / iteration_s,
            device_worst_step_us: stats.worst_step_us,
            device_missed_deadlines: stats.missed_deadlines,
            control_period_us: self.plant.control_period_us(),
            ..IterationMetrics::default()
        };
        match report {
            Ok(r) => {
                metrics.kl = r.kl;
                metrics.entropy = r.entropy;
                metrics.expected_improvement = r.expected_improvement;
                metrics.actual_improvement = r.actual_improvement;
                metrics.improvement_ratio = r.improvement_ratio;
                metrics.line_search_steps = r.line_search_steps as u32;
                metrics.accepted = r.accepted;
                metrics.value_loss = r.value_loss;
                metrics.explained_variance = r.explained_variance;
                metrics.skipped_reason = r.skipped_reason;
            }
            Err(e) => {
                metrics.kl = f64::NAN;
                metrics.entropy = f64::NAN;
                metrics.skipped_reason = Some(e.to_string());
            }
        }
        self.record(&metrics)?;
        Ok(metrics)
    }

    /// Metrics line, then the policy, then the checkpoint: a crash between any two leaves a
    /// state `resume` understands (it trims metrics past the checkpoint).
    fn record(&mut self, metrics: &IterationMetrics) -> Result<(), SessionError> {
        self.metrics.append(metrics)?;
        self.history.push(metrics.clone());
        PolicyFile {
            spec: self.spec.clone(),
            params: self.learner.export_f32(),
        }
        .write_bin(&self.folder.policy_path())?;
        let state = TrainingState {
            plant: self.config.plant.clone(),
            progress: self.progress.clone(),
            learner: self.learner.state(),
        };
        Checkpoint::save(&self.folder.checkpoint_path(), &state)?;
        if self.progress.iteration.is_multiple_of(PLOT_EVERY) {
            self.plot();
        }
        Ok(())
    }

    fn plot(&self) {
        if self.history.is_empty() {
            return;
        }
        let result = plot_curves(
            &self.history,
            &self.folder.curve_svg(),
            &self.folder.curve_png(),
            Some(self.config.trpo.target_kl),
        );
        if let Err(e) = result {
            tracing::warn!("could not draw the learning curves: {e}");
        }
    }
}

fn connect(config: &RunConfig<TrpoConfig>) -> Result<Fleet, SessionError> {
    let spec = FleetSpec::from_config(config).map_err(|e| {
        SessionError::Config(ConfigError::Invalid {
            origin: Path::new("command line").to_path_buf(),
            key: "devices".into(),
            reason: e,
        })
    })?;
    Ok(Fleet::connect(&spec)?)
}

/// The learner's policy head for a plant's action space.
pub fn policy_head(plant: &PlantDescription) -> PolicyHead {
    match &plant.action {
        ActionSpace::Continuous { low, .. } => PolicyHead::DiagGaussian {
            action_dim: low.len(),
        },
        ActionSpace::Discrete { n } => PolicyHead::Categorical {
            n_actions: *n as usize,
        },
    }
}

/// The seed of one device's round: a SplitMix64-style mix of run seed, iteration and device,
/// so every stream is reproducible and independent of timing.
pub fn round_seed(seed: u64, iteration: u64, device: u64) -> u64 {
    let mut z = seed
        ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ device.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
