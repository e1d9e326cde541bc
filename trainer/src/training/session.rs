//! The iteration loop of `tether train` and `tether resume`.
//!
//! Each iteration: export the policy as f32 → every live device collects its share of the
//! step budget (uploading the new policy first) → the batch is assembled in device order →
//! one TRPO update → the metrics line (in `metrics.jsonl` and the TensorBoard events),
//! `policy.bin` and the checkpoint are written, in that order, each atomically, on the
//! run's writer thread ([`BackgroundWriter`]) while the next iteration collects. An
//! interrupted run resumes from the checkpoint and redoes the iterations after it (the one
//! it was in, and at most [`WRITE_QUEUE_DEPTH`] + 1 whose records were still being
//! written), which reproduces exactly because every random stream is a function of (seed,
//! iteration, device).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tether_shared::message::{RecordLayout, RunMode};
use tether_shared::seeds::round_seed;
use tether_shared::{PlantDescription, PolicySpec};

use super::assembly::{AssembledBatch, assemble};
use super::best_candidates::{BestCandidates, prune_candidate_files, write_candidate};
use super::evaluation::{EvaluationRound, evaluate_on};
use super::fleet::{Fleet, FleetError, FleetSpec};
use super::round_stats::RoundStats;
use super::run_state::{Progress, TrainingState};
use super::smoothness::Smoothness;
use super::warm_start::{WarmStart, WarmStartError};
use crate::rollout::pool::RoundResult;
use crate::rollout::{CollectRequest, DevicePool, Recovery};
use crate::run::background_writer::BackgroundWriter;
use crate::run::checkpoint::CheckpointError;
use crate::run::config::{RunConfig, RunConfigError};
use crate::run::folder::RunFolder;
use crate::run::iteration_log::{IterationLog, IterationLogError};
use crate::run::metrics::{IterationMetrics, MetricsError};
use crate::run::plant_file::{PlantFileError, save_plant};
use crate::run::plot::plot_curves;
use crate::run::policy_file::{PolicyFile, PolicyFileError};
use crate::trpo::gsde::run_distribution;
use crate::trpo::hyperparams::TrpoConfig;
use crate::trpo::{StateError, Trpo, UpdateError, UpdateReport};

/// Episode ids of iteration `i` start at `i × EPISODE_ID_BLOCK`, so ids never repeat
/// across iterations (a device runs far fewer episodes than this per iteration).
const EPISODE_ID_BLOCK: u64 = 1 << 16;

/// Redraw the curves when this long has passed since the last drawing (and at the end).
/// A rig's iteration takes tens of seconds, so its curves follow every iteration; a
/// simulated one takes tens of milliseconds, and drawing both files after every tenth
/// (as before) was 5 % of a 10M-step run's wall time.
const PLOT_INTERVAL: Duration = Duration::from_secs(10);

/// Iteration records that may wait behind the one being written before the loop waits for
/// the disk. One is enough while writing a record (a few ms) is faster than an iteration.
const WRITE_QUEUE_DEPTH: usize = 1;

/// Why a session stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Devices could not be connected.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] RunConfigError),
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
    PolicyFile(#[from] PolicyFileError),
    /// The warm start (`--init`) does not fit the run.
    #[error(transparent)]
    WarmStart(#[from] WarmStartError),
    /// The run's writer thread could not be started.
    #[error("cannot start the thread that writes the run's files: {0}")]
    Writer(std::io::Error),
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
    _fleet_boards: Vec<crate::device::simulated::SimDevice>,
    plant: PlantDescription,
    spec: PolicySpec,
    learner: Trpo,
    progress: Progress,
    /// Appended to by the writer's jobs only.
    metrics: Arc<Mutex<IterationLog>>,
    history: Vec<IterationMetrics>,
    /// The policies `best_policy.bin` averages (`[evaluation] average_best` > 1); `None`:
    /// it is the single best policy.
    best_candidates: Option<BestCandidates>,
    observer: Option<RoundObserver>,
    /// When the curves were last drawn (`None`: not yet in this session).
    last_plot: Option<Instant>,
    /// Writes each iteration's record (see the module docs).
    writer: BackgroundWriter<SessionError>,
}

/// Sees every round's per-device results before they are assembled into a batch (test hook:
/// the fault tests compare every accepted transition with the device's own record).
pub type RoundObserver = Box<dyn FnMut(&[RoundResult]) + Send>;

impl Session {
    /// Starts a new run in `folder` (which must not hold a run).
    pub fn start(folder: RunFolder, config: RunConfig<TrpoConfig>) -> Result<Self, SessionError> {
        config.validate(&folder.config_path())?;
        let fleet = Fleet::connect(&FleetSpec::from_config(&config)?)?;
        Self::start_with_fleet(folder, config, fleet)
    }

    /// Starts a new run in `folder` on devices already connected, which must control
    /// `config.plant` (the `[devices]` part of `config` is recorded but not used to
    /// connect). `tether train` connects first to learn the plant; tests build their own
    /// simulated boards.
    pub fn start_with_fleet(
        folder: RunFolder,
        config: RunConfig<TrpoConfig>,
        fleet: Fleet,
    ) -> Result<Self, SessionError> {
        Self::start_warm(folder, config, fleet, None)
    }

    /// Like [`Session::start_with_fleet`], with the learner starting from `warm` (a trained
    /// run or policy, see [`super::warm_start`]) instead of random weights.
    pub fn start_warm(
        folder: RunFolder,
        config: RunConfig<TrpoConfig>,
        fleet: Fleet,
        warm: Option<&WarmStart>,
    ) -> Result<Self, SessionError> {
        config.validate(&folder.config_path())?;
        if fleet.plant.name.as_str() != config.plant {
            return Err(SessionError::Fleet(FleetError::PlantMismatch {
                device: fleet
                    .clients
                    .first()
                    .map_or_else(String::new, |c| c.name().to_string()),
                reports: fleet.plant.name.to_string(),
                expected: config.plant,
            }));
        }
        let head = run_distribution(&fleet.plant, &config.trpo)
            .map_err(|e| SessionError::Learner(e.to_string()))?;
        let obs_dim = fleet.plant.obs_dim as usize;
        let mut learner = Trpo::new(obs_dim, head, config.trpo.clone(), config.seed)
            .map_err(|e| SessionError::Learner(e.to_string()))?;
        if let Some(warm) = warm {
            let state = warm.apply(&config.plant, learner.state())?;
            learner = Trpo::from_state(obs_dim, head, state)
                .map_err(|e| SessionError::BadCheckpoint(format!("--init: {e}")))?;
        }
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
            config.save(&folder.config_path())?;
        }
        let state = TrainingState::load(&folder.checkpoint_path())?;
        if state.plant != config.plant {
            return Err(SessionError::BadCheckpoint(format!(
                "checkpoint is for plant `{}`, config says `{}`",
                state.plant, config.plant
            )));
        }
        let fleet = Fleet::connect(&FleetSpec::from_config(&config)?)?;
        let head = run_distribution(&fleet.plant, &state.learner.config)
            .map_err(|e| SessionError::BadCheckpoint(e.to_string()))?;
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
        let spec = learner
            .device_spec()
            .map_err(|e| SessionError::Learner(e.to_string()))?;
        let plant = fleet.plant.clone();
        let pool = DevicePool::new(fleet.clients);
        let keep = config.evaluation.average_best as usize;
        let best_candidates = (keep > 1).then(|| BestCandidates::restore(keep, &history, &folder));
        Ok(Session {
            folder,
            config,
            pool,
            _fleet_boards: fleet.boards,
            plant,
            spec,
            learner,
            progress,
            metrics: Arc::new(Mutex::new(metrics)),
            history,
            best_candidates,
            observer: None,
            last_plot: None,
            writer: BackgroundWriter::spawn("run-writer", WRITE_QUEUE_DEPTH)
                .map_err(SessionError::Writer)?,
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
        // Whatever happened, leave the curves up to date and every record on disk.
        let plotted = self.plot();
        let written = self.writer.wait();
        let finished = result?;
        plotted?;
        written?;
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
        let results = self.collect_round(iteration)?;
        if let Some(observer) = self.observer.as_mut() {
            observer(&results);
        }
        let assembled = self.assemble_round(&results);

        let update_started = Instant::now();
        let report = self.learner.update(&assembled.batch);
        let update_s = update_started.elapsed().as_secs_f64();

        self.progress.iteration += 1;
        self.progress.env_steps += assembled.steps as u64;
        self.progress.episodes += assembled.complete_returns.len() as u64;
        self.progress.rejections.add(&assembled.rejections);
        let iteration_s = started.elapsed().as_secs_f64();
        self.progress.wall_s += iteration_s;
        let rollouts = || results.iter().filter_map(|r| r.outcome.as_ref().ok());
        let stats = RoundStats::of(rollouts());
        let smoothness = Smoothness::of_round(rollouts(), &self.plant.action);

        let mut metrics = IterationMetrics {
            iteration,
            env_steps: self.progress.env_steps,
            episodes: self.progress.episodes,
            mean_return: assembled.mean_return(),
            mean_episode_length: stats.mean_episode_length,
            rejected_frames: assembled.rejections.rejected_frames,
            discarded_episodes: assembled.rejections.discarded_episodes,
            reconnects: assembled.rejections.reconnects,
            resend_requests: assembled.rejections.resend_requests,
            recovered_steps: assembled.rejections.recovered_steps,
            cut_episodes: assembled.rejections.cut_episodes,
            lost_steps: assembled.rejections.lost_steps,
            devices_active: self.pool.live() as u32,
            wall_s: self.progress.wall_s,
            update_s,
            steps_per_s: assembled.steps as f64 / iteration_s,
            device_worst_step_us: stats.worst_step_us,
            device_missed_deadlines: stats.missed_deadlines,
            control_period_us: self.plant.control_period_us(),
            action_change_mean: smoothness.action_change_mean,
            action_hf_share: smoothness.action_hf_share,
            rate_limited_steps: stats.rate_limited_steps,
            ..IterationMetrics::default()
        };
        record_update(&mut metrics, report);
        let last = self.progress.env_steps >= self.config.total_steps;
        if self
            .config
            .evaluation
            .due(iteration, self.progress.env_steps, last)
        {
            self.evaluate(iteration, &mut metrics);
        }
        self.record(&metrics)?;
        Ok(metrics)
    }

    /// The `[evaluation]` episodes of the policy iteration `iteration` produced, into its
    /// metrics. The policy goes up as the version the next round will use, so that round
    /// does not send it again; training does not depend on whether evaluations ran (every
    /// round seeds the devices afresh). A failed evaluation is logged and training goes
    /// on: the next round finds out about lost devices.
    fn evaluate(&mut self, iteration: u64, metrics: &mut IterationMetrics) {
        let round = EvaluationRound {
            spec: &self.spec,
            params: Arc::new(self.learner.export_f32()),
            version: (iteration + 2) as u32,
            episodes: self.config.evaluation.episodes,
            seed: self.config.seed,
            timeouts: &self.config.timeouts,
            plant: &self.plant,
        };
        match evaluate_on(&mut self.pool, &round) {
            Ok(report) => {
                // The best so far is in the run's metrics (a resumed run's too: the lines
                // past its checkpoint are trimmed), so nothing else needs to carry it.
                let best_so_far = self
                    .history
                    .iter()
                    .filter_map(|m| m.eval_mean_return)
                    .fold(f64::NEG_INFINITY, f64::max);
                let best = report.mean_return > best_so_far;
                metrics.eval_mean_return = Some(report.mean_return);
                metrics.eval_mean_episode_length = Some(report.mean_length);
                metrics.eval_best = Some(best);
            }
            Err(e) => tracing::warn!("evaluation after iteration {iteration} failed: {e}"),
        }
    }

    /// Every live device collects its share of the iteration's steps with the current
    /// policy; results in device order. No live device left is an error.
    fn collect_round(&mut self, iteration: u64) -> Result<Vec<RoundResult>, SessionError> {
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
        let budget = (self.config.steps_per_iteration as usize).max(1);
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
            recovery: Recovery::for_plant(&self.config.timeouts, &self.plant),
        };
        let seed = self.config.seed;
        Ok(self.pool.round(|device, rank| CollectRequest {
            seed: round_seed(seed, iteration, device as u64),
            steps: Some(share + usize::from(rank < extra)),
            ..request.clone()
        }))
    }

    /// The learner's batch from a round's results; what devices dropped during the round
    /// lost (frames, episodes) is counted too.
    fn assemble_round(&self, results: &[RoundResult]) -> AssembledBatch {
        let mut assembled = assemble(
            results.iter().filter_map(|r| r.outcome.as_ref().ok()),
            RecordLayout::of_plant(&self.plant),
        );
        for r in results {
            assembled.rejections.add(&r.lost);
        }
        assembled
    }

    /// Hands the iteration's record to the writer: the metrics line and event, the best
    /// policy when it changed (with `average_best` > 1, the new candidate's file first),
    /// `policy.bin`, the checkpoint, in that order, so a crash between any two leaves a
    /// state `resume` understands (it trims metrics past the checkpoint and redoes the
    /// iterations after it; see [`crate::run`]); candidates that dropped out are removed
    /// last. Returns an earlier record's write error.
    fn record(&mut self, metrics: &IterationMetrics) -> Result<(), SessionError> {
        self.history.push(metrics.clone());
        let line = metrics.clone();
        let log = Arc::clone(&self.metrics);
        let policy = PolicyFile {
            spec: self.spec.clone(),
            params: self.learner.export_f32(),
        };
        let best = match (&mut self.best_candidates, metrics.eval_mean_return) {
            (None, _) => (metrics.eval_best == Some(true)).then_some(BestPolicyWrite::This),
            (Some(set), Some(eval)) => {
                let kept = set.offer(metrics.iteration, eval, &policy.params);
                set.mean()
                    .filter(|_| kept)
                    .map(|params| BestPolicyWrite::Mean {
                        candidate: self.folder.candidate_path(metrics.iteration),
                        mean: PolicyFile {
                            spec: self.spec.clone(),
                            params,
                        },
                        keep: set.iterations(),
                    })
            }
            (Some(_), None) => None,
        };
        let best_path = self.folder.best_policy_path();
        let candidates_dir = self.folder.candidates_dir();
        let policy_path = self.folder.policy_path();
        let state = TrainingState {
            plant: self.config.plant.clone(),
            progress: self.progress.clone(),
            learner: self.learner.state(),
        };
        let checkpoint_path = self.folder.checkpoint_path();
        self.writer.submit(move || {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&line)?;
            match &best {
                Some(BestPolicyWrite::This) => policy.write_bin(&best_path)?,
                Some(BestPolicyWrite::Mean {
                    candidate, mean, ..
                }) => {
                    write_candidate(&candidates_dir, candidate, &policy)?;
                    mean.write_bin(&best_path)?;
                }
                None => {}
            }
            policy.write_bin(&policy_path)?;
            state.save(&checkpoint_path)?;
            if let Some(BestPolicyWrite::Mean { keep, .. }) = &best {
                prune_candidate_files(&candidates_dir, keep)?;
            }
            Ok(())
        })?;
        if self
            .last_plot
            .is_none_or(|drawn| drawn.elapsed() >= PLOT_INTERVAL)
        {
            self.plot()?;
        }
        Ok(())
    }

    /// Queues a drawing of the curves from the history so far.
    fn plot(&mut self) -> Result<(), SessionError> {
        if self.history.is_empty() {
            return Ok(());
        }
        self.last_plot = Some(Instant::now());
        let history = self.history.clone();
        let (svg, png) = (self.folder.curve_svg(), self.folder.curve_png());
        let target_kl = self.config.trpo.target_kl;
        // A curve that cannot be drawn is a warning, not a reason to stop training; the
        // error returned is an earlier record's.
        self.writer.submit(move || {
            if let Err(e) = plot_curves(&history, &svg, &png, Some(target_kl)) {
                tracing::warn!("could not draw the learning curves: {e}");
            }
            Ok(())
        })
    }
}

/// What an iteration's record writes as `best_policy.bin`.
enum BestPolicyWrite {
    /// This iteration's policy (the single best so far).
    This,
    /// The mean of the kept candidates, after writing this iteration's policy as one.
    Mean {
        /// Where this iteration's policy goes as a candidate.
        candidate: std::path::PathBuf,
        /// The new `best_policy.bin`.
        mean: PolicyFile,
        /// The candidates kept after this iteration (their files stay).
        keep: Vec<u64>,
    },
}

/// The update's figures into an iteration's metrics; a refused batch leaves KL and entropy
/// NaN and says why.
fn record_update(metrics: &mut IterationMetrics, report: Result<UpdateReport, UpdateError>) {
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
            metrics.update_gradient_s = r.timings.gradient_seconds;
            metrics.update_cg_s = r.timings.cg_seconds;
            metrics.update_line_search_s = r.timings.line_search_seconds;
            metrics.value_fit_s = r.timings.value_fit_seconds;
        }
        Err(e) => {
            metrics.kl = f64::NAN;
            metrics.entropy = f64::NAN;
            metrics.update_gradient_s = f64::NAN;
            metrics.update_cg_s = f64::NAN;
            metrics.update_line_search_s = f64::NAN;
            metrics.value_fit_s = f64::NAN;
            metrics.skipped_reason = Some(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::simulated::test_device;
    use crate::run::metrics::read_metrics;
    use crate::run::testdir::TestDir;
    use std::path::PathBuf;

    /// A small pendulum run: 2 simulated devices, 200 steps per iteration, [4] networks.
    fn config(total_steps: u64) -> RunConfig<TrpoConfig> {
        let mut config = RunConfig::<TrpoConfig> {
            plant: "pendulum".into(),
            seed: 4,
            total_steps,
            steps_per_iteration: 200,
            ..RunConfig::default()
        };
        config.devices.sim = 2;
        config.trpo.policy_hidden = vec![4];
        config.trpo.value_hidden = vec![4];
        config
    }

    fn run_to_the_end(session: &mut Session) -> SessionOutcome {
        session
            .run(&AtomicBool::new(false), |_| {})
            .expect("the run finishes")
    }

    /// Each iteration appends a metrics line and writes `policy.bin` and the checkpoint; the
    /// run stops at the first iteration that reaches the step budget.
    #[test]
    fn a_run_records_every_iteration_and_stops_at_the_budget() {
        let dir = TestDir::new("session-run");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        let mut session = Session::start(folder, config(400)).expect("starts");
        assert_eq!(session.plant().name.as_str(), "pendulum");
        let mut seen = Vec::new();
        let outcome = session
            .run(&AtomicBool::new(false), |m| seen.push(m.iteration))
            .expect("finishes");
        assert!(outcome.finished);
        assert_eq!(seen, [0, 1]);
        assert_eq!(
            (outcome.progress.iteration, outcome.progress.env_steps),
            (2, 400)
        );
        assert!(outcome.lost_devices.is_empty());
        let metrics = read_metrics(&paths.metrics_path()).expect("metrics");
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[1].env_steps, 400);
        assert_eq!(metrics[1].devices_active, 2);
        let state = TrainingState::load(&paths.checkpoint_path()).expect("checkpoint");
        assert_eq!(state.progress, outcome.progress);
        assert_eq!(state.learner.seed, 4);
        assert!(paths.policy_path().is_file());
        let saved: RunConfig<TrpoConfig> = RunConfig::load(&paths.config_path()).expect("config");
        assert_eq!(saved, *session.config());
    }

    /// Records are written on the writer's thread; one that cannot be written still stops
    /// the run with an error naming the file, and the metrics written before it stay.
    #[test]
    fn a_record_that_cannot_be_written_stops_the_run_naming_the_file() {
        let dir = TestDir::new("session-write-fails");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        // A non-empty directory where the checkpoint goes: its rename fails.
        std::fs::create_dir_all(paths.checkpoint_path().join("occupied")).expect("blocker");
        let mut session = Session::start(folder, config(2000)).expect("starts");
        let mut iterations = 0;
        let err = session
            .run(&AtomicBool::new(false), |_| iterations += 1)
            .expect_err("the checkpoint cannot be written");
        assert!(matches!(err, SessionError::Checkpoint(_)), "{err:?}");
        assert!(err.to_string().contains("checkpoint.bin"), "{err}");
        // The loop stops within the writer's queue of the failed record, not at the budget.
        assert!(
            (1..=1 + WRITE_QUEUE_DEPTH + 1).contains(&iterations),
            "{iterations} iterations ran"
        );
        let metrics = read_metrics(&paths.metrics_path()).expect("metrics");
        assert!(!metrics.is_empty() && metrics.len() <= iterations);
    }

    #[test]
    fn a_raised_stop_flag_ends_the_run_before_the_next_iteration() {
        let dir = TestDir::new("session-stop");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let mut session = Session::start(folder, config(400)).expect("starts");
        let outcome = session
            .run(&AtomicBool::new(true), |_| panic!("no iteration"))
            .expect("stops");
        assert!(!outcome.finished);
        assert_eq!(outcome.progress, Progress::default());
    }

    /// Stopped at 400 steps and resumed to 600, a run writes the policy a straight run to
    /// 600 writes.
    #[test]
    fn a_resumed_run_continues_exactly_as_a_straight_one() {
        let dir = TestDir::new("session-resume");
        let straight = RunFolder::create(&dir.join("straight")).expect("folder");
        let straight_policy = straight.policy_path();
        run_to_the_end(&mut Session::start(straight, config(600)).expect("starts"));

        let split = RunFolder::create(&dir.join("split")).expect("folder");
        let split_paths = split.clone();
        run_to_the_end(&mut Session::start(split, config(400)).expect("starts"));
        let mut resumed = Session::resume(split_paths.clone(), Some(600)).expect("resumes");
        assert_eq!(resumed.progress().iteration, 2);
        assert_eq!(resumed.config().total_steps, 600);
        let outcome = run_to_the_end(&mut resumed);
        assert_eq!(outcome.progress.iteration, 3);
        let iterations: Vec<u64> = read_metrics(&split_paths.metrics_path())
            .expect("metrics")
            .iter()
            .map(|m| m.iteration)
            .collect();
        assert_eq!(iterations, [0, 1, 2]);
        assert_eq!(
            std::fs::read(split_paths.policy_path()).expect("policy"),
            std::fs::read(&straight_policy).expect("policy")
        );
    }

    /// A pendulum run that evaluates every `every` iterations (4 episodes) on randomised
    /// plants, with gSDE noise drawn once per round: the device state an evaluation could
    /// disturb.
    fn evaluated_config(total_steps: u64, every: u64) -> RunConfig<TrpoConfig> {
        let mut config = config(total_steps);
        // One whole 200-step episode per device and iteration, so every return is defined.
        config.steps_per_iteration = 400;
        config.trpo.use_sde = true;
        config.trpo.sde_sample_freq = 0;
        config.plant_randomize.insert("mass".into(), [0.8, 1.2]);
        config.evaluation.every = every;
        config.evaluation.episodes = 4;
        config
    }

    /// Evaluations between iterations do not change training (the same policy bytes and
    /// returns as a run without them), run after every second iteration and after the
    /// last, and keep the best policy: `eval_best` marks each new maximum of the
    /// evaluation's mean return, and `best_policy.bin` is the last marked iteration's.
    #[test]
    fn evaluations_keep_the_best_policy_and_leave_training_unchanged() {
        let dir = TestDir::new("session-evaluation");
        let plain = RunFolder::create(&dir.join("plain")).expect("folder");
        let plain_paths = plain.clone();
        run_to_the_end(&mut Session::start(plain, evaluated_config(2000, 0)).expect("starts"));
        let evaluated = RunFolder::create(&dir.join("evaluated")).expect("folder");
        let paths = evaluated.clone();
        run_to_the_end(&mut Session::start(evaluated, evaluated_config(2000, 2)).expect("starts"));

        let read = |folder: &RunFolder| read_metrics(&folder.metrics_path()).expect("metrics");
        let (without, with) = (read(&plain_paths), read(&paths));
        let returns = |m: &[IterationMetrics]| m.iter().map(|m| m.mean_return).collect::<Vec<_>>();
        assert!(returns(&with).iter().all(|r| r.is_finite()));
        assert_eq!(returns(&without), returns(&with));
        let bytes = |path: PathBuf| std::fs::read(path).expect("policy");
        assert_eq!(bytes(plain_paths.policy_path()), bytes(paths.policy_path()));
        assert!(without.iter().all(|m| m.eval_mean_return.is_none()));
        assert!(!plain_paths.best_policy_path().exists());

        let evaluated_at: Vec<u64> = with
            .iter()
            .filter(|m| m.eval_mean_return.is_some())
            .map(|m| m.iteration)
            .collect();
        assert_eq!(evaluated_at, [1, 3, 4]);
        let mut best = f64::NEG_INFINITY;
        for m in with.iter().filter(|m| m.eval_mean_return.is_some()) {
            let mean = m.eval_mean_return.expect("evaluated");
            assert!(mean.is_finite() && m.eval_mean_episode_length == Some(200.0));
            assert_eq!(m.eval_best, Some(mean > best), "{m:?}");
            best = best.max(mean);
        }
        let last_best = with.iter().rev().find(|m| m.eval_best == Some(true));
        let best_is_last = last_best.is_some_and(|m| m.iteration == 4);
        assert_eq!(
            bytes(paths.best_policy_path()) == bytes(paths.policy_path()),
            best_is_last
        );
    }

    /// With `average_best = 3`, `best_policy.bin` is the element-wise mean of the policies
    /// of the three best evaluations, kept as candidate files and no others; a run resumed
    /// after every iteration (which rebuilds the set from its metrics and files each time)
    /// ends with the same files as a straight one, and each candidate is the policy its
    /// iteration produced.
    #[test]
    fn the_best_policy_averages_the_best_evaluated_candidates() {
        let dir = TestDir::new("session-average-best");
        let averaged = |total_steps| {
            let mut config = evaluated_config(total_steps, 1);
            config.evaluation.average_best = 3;
            config
        };
        let straight = RunFolder::create(&dir.join("straight")).expect("folder");
        let straight_paths = straight.clone();
        run_to_the_end(&mut Session::start(straight, averaged(2400)).expect("starts"));

        let split = RunFolder::create(&dir.join("split")).expect("folder");
        let paths = split.clone();
        run_to_the_end(&mut Session::start(split, averaged(400)).expect("starts"));
        let read = |path: PathBuf| PolicyFile::read_bin(&path).expect("a policy");
        let mut policies = vec![read(paths.policy_path())];
        for steps in (800..=2400).step_by(400) {
            run_to_the_end(&mut Session::resume(paths.clone(), Some(steps)).expect("resumes"));
            policies.push(read(paths.policy_path()));
        }

        let metrics = read_metrics(&paths.metrics_path()).expect("metrics");
        let mut ranked: Vec<(f64, u64)> = metrics
            .iter()
            .map(|m| {
                (
                    m.eval_mean_return.expect("evaluated every iteration"),
                    m.iteration,
                )
            })
            .collect();
        assert_eq!(ranked.len(), 6);
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut best: Vec<u64> = ranked.iter().take(3).map(|&(_, i)| i).collect();
        best.sort_unstable();

        let candidates = |folder: &RunFolder| {
            let mut found: Vec<u64> = std::fs::read_dir(folder.candidates_dir())
                .expect("a candidates folder")
                .map(|e| {
                    e.expect("an entry")
                        .file_name()
                        .into_string()
                        .expect("utf-8")
                })
                .map(|name| RunFolder::candidate_iteration(&name).expect("a candidate"))
                .collect();
            found.sort_unstable();
            found
        };
        assert_eq!(candidates(&paths), best);
        let mut sum = vec![0.0f64; policies[0].params.len()];
        for &i in &best {
            let candidate = read(paths.candidate_path(i));
            assert_eq!(candidate, policies[i as usize], "iteration {i}'s policy");
            for (s, &p) in sum.iter_mut().zip(&candidate.params) {
                *s += f64::from(p);
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / 3.0) as f32).collect();
        let best_policy = read(paths.best_policy_path());
        assert_eq!(best_policy.params, mean);
        assert!(
            policies.iter().all(|p| p.params != mean),
            "a mean, not one of them"
        );

        assert_eq!(candidates(&straight_paths), best);
        let bytes = |path: PathBuf| std::fs::read(path).expect("a file");
        assert_eq!(
            bytes(straight_paths.best_policy_path()),
            bytes(paths.best_policy_path())
        );
    }

    /// A resumed run's evaluations are judged against the best before the interruption:
    /// its metrics are those of a straight run, `eval_best` flags included.
    #[test]
    fn a_resumed_run_remembers_its_best_evaluation() {
        let dir = TestDir::new("session-evaluation-resume");
        let straight = RunFolder::create(&dir.join("straight")).expect("folder");
        let straight_paths = straight.clone();
        run_to_the_end(&mut Session::start(straight, evaluated_config(2000, 1)).expect("starts"));
        let split = RunFolder::create(&dir.join("split")).expect("folder");
        let split_paths = split.clone();
        run_to_the_end(&mut Session::start(split, evaluated_config(1200, 1)).expect("starts"));
        run_to_the_end(&mut Session::resume(split_paths.clone(), Some(2000)).expect("resumes"));
        let flags = |folder: &RunFolder| {
            read_metrics(&folder.metrics_path())
                .expect("metrics")
                .iter()
                .map(|m| (m.eval_mean_return.map(f64::to_bits), m.eval_best))
                .collect::<Vec<_>>()
        };
        let straight_flags = flags(&straight_paths);
        assert_eq!(straight_flags.len(), 5);
        assert_eq!(flags(&split_paths), straight_flags);
        assert_eq!(
            std::fs::read(split_paths.best_policy_path()).expect("best"),
            std::fs::read(straight_paths.best_policy_path()).expect("best")
        );
    }

    /// gSDE end to end on simulated devices: every iteration's update is taken, no
    /// log-probability is refused by the host's cross-check, and the devices run the gSDE
    /// head the learner exported.
    #[test]
    fn a_gsde_run_trains_on_simulated_devices() {
        let dir = TestDir::new("session-gsde");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        let mut config = config(800);
        config.trpo.use_sde = true;
        config.trpo.sde_sample_freq = 4;
        let mut session = Session::start(folder, config).expect("starts");
        assert!(matches!(
            session.spec.head,
            tether_shared::PolicyHead::GaussianSde(head) if head.resample_every == 4
        ));
        let outcome = run_to_the_end(&mut session);
        assert_eq!(outcome.progress.iteration, 4);
        assert_eq!(outcome.progress.rejections, Default::default());
        let metrics = read_metrics(&paths.metrics_path()).expect("metrics");
        assert!(metrics.iter().all(|m| m.accepted), "{metrics:?}");
        // Smoothness is measured every iteration; no rate limit is set, so it never acts.
        assert!(metrics.iter().all(|m| m.action_change_mean > 0.0
            && (0.0..=1.0).contains(&m.action_hf_share)
            && m.rate_limited_steps == 0));
        let state = TrainingState::load(&paths.checkpoint_path()).expect("checkpoint");
        assert!(state.learner.config.use_sde);
    }

    /// Simulated devices given an action rate limit enforce it and report it: the run
    /// counts the steps it changed, and the actions the plants received move by at most
    /// the limit per step.
    #[test]
    fn a_rate_limited_run_reports_the_limit_and_moves_within_it() {
        let dir = TestDir::new("session-rate-limit");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        // Two iterations of one whole 200-step episode per device (a cut episode reports
        // nothing about its steps).
        let mut config = config(800);
        config.steps_per_iteration = 400;
        config.trpo.use_sde = true;
        config.devices.action_rate_limit = vec![0.05];
        let mut session = Session::start(folder, config).expect("starts");
        run_to_the_end(&mut session);
        let metrics = read_metrics(&paths.metrics_path()).expect("metrics");
        assert!(
            metrics.iter().all(|m| m.rate_limited_steps > 0),
            "{metrics:?}"
        );
        assert!(
            metrics
                .iter()
                .all(|m| m.action_change_mean > 0.0 && m.action_change_mean <= 0.05 + 1e-6),
            "{metrics:?}"
        );
    }

    /// `use_sde` on a plant with discrete actions stops the run before anything is written,
    /// saying why.
    #[test]
    fn gsde_on_a_categorical_plant_is_refused_before_anything_is_written() {
        let dir = TestDir::new("session-gsde-discrete");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        let mut config = config(400);
        config.plant = "cartpole".into();
        config.trpo.use_sde = true;
        let Err(err) = Session::start(folder, config) else {
            panic!("gSDE on discrete actions is refused");
        };
        let text = err.to_string();
        assert!(
            text.contains("`use_sde = true` needs a continuous action space")
                && text.contains("cartpole"),
            "{text}"
        );
        assert!(!paths.config_path().exists());
        assert!(!paths.checkpoint_path().exists());
    }

    #[test]
    fn devices_of_another_plant_are_refused_before_anything_is_written() {
        let dir = TestDir::new("session-plant");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let paths = folder.clone();
        let device = test_device::connect("cartpole");
        let fleet = Fleet {
            plant: device.client.info().plant.clone(),
            clients: vec![device.client],
            boards: Vec::new(),
        };
        let Err(err) = Session::start_with_fleet(folder, config(400), fleet) else {
            panic!("another plant is refused");
        };
        assert!(
            matches!(&err, SessionError::Fleet(FleetError::PlantMismatch { reports, expected, .. })
                if reports == "cartpole" && expected == "pendulum"),
            "{err}"
        );
        assert!(!paths.config_path().exists());

        // On resume, a checkpoint of another plant than the configuration's is refused.
        let folder = RunFolder::create(&dir.join("done")).expect("folder");
        let paths = folder.clone();
        run_to_the_end(&mut Session::start(folder, config(200)).expect("starts"));
        let mut edited: RunConfig<TrpoConfig> =
            RunConfig::load(&paths.config_path()).expect("config");
        edited.plant = "cartpole".into();
        edited.save(&paths.config_path()).expect("save");
        let err = Session::resume(paths, None).err().expect("plant differs");
        assert!(matches!(err, SessionError::BadCheckpoint(_)), "{err}");
    }

    /// When the last device is gone, the run stops with an error naming it; the checkpoint
    /// of the last complete iteration stays.
    #[test]
    fn losing_every_device_stops_the_run_naming_them() {
        let dir = TestDir::new("session-lost");
        let folder = RunFolder::create(&dir.join("run")).expect("folder");
        let device = test_device::connect("pendulum");
        let fleet = Fleet {
            plant: device.client.info().plant.clone(),
            clients: vec![device.client],
            boards: Vec::new(),
        };
        let mut config = config(400);
        config.devices.sim = 1;
        config.timeouts.silence_s = 0.3;
        let mut session = Session::start_with_fleet(folder, config, fleet).expect("starts");
        device.board.stop();
        let err = session
            .run(&AtomicBool::new(false), |_| {})
            .expect_err("no device left");
        assert!(
            matches!(&err, SessionError::AllDevicesLost(names) if names.contains("pendulum")),
            "{err}"
        );
    }
}
