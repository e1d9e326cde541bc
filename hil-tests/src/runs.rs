//! Small run configurations and a helper that trains one to the end through the library,
//! exactly as `tether train` does (same [`Session`], same run folder files).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use tether_firmware::plant::AnyPlant;
use tether_firmware::sim::SimBoard;
use tether_trainer::device::simulated::SimDeviceSpec;
use tether_trainer::run::{IterationMetrics, LinkKind, RunConfig, RunFolder, read_metrics};
use tether_trainer::training::preset::Preset;
use tether_trainer::training::{Session, SessionOutcome};
use tether_trainer::trpo::hyperparams::TrpoConfig;

/// A simulated board of `plant` as `tether train` and `tether sim` start one: virtual
/// time, no watchdog (in virtual time the device's seconds outrun the host's heartbeats).
pub fn board(plant: &str) -> SimBoard<AnyPlant> {
    SimDeviceSpec::virtual_time(plant)
        .board()
        .expect("a simulated plant")
}

/// A run of `total_steps` on `sim` simulated devices of `plant`, from the plant's preset
/// with `steps_per_iteration` steps per iteration and a small silence timeout (a lost
/// device is noticed in a fraction of a second).
pub fn config(
    plant: &str,
    sim: u32,
    link: LinkKind,
    seed: u64,
    total_steps: u64,
    steps_per_iteration: usize,
) -> RunConfig<TrpoConfig> {
    let preset = Preset::named(plant).expect("a preset plant");
    let mut config = RunConfig::<TrpoConfig> {
        plant: plant.to_string(),
        preset: Some(preset.name.to_string()),
        seed,
        total_steps,
        steps_per_iteration: steps_per_iteration as u64,
        trpo: preset.trpo,
        ..RunConfig::default()
    };
    config.devices.sim = sim;
    config.devices.link = link;
    config.timeouts.silence_s = 1.0;
    config
}

/// What a finished run left behind.
pub struct FinishedRun {
    /// The session's own account.
    pub outcome: SessionOutcome,
    /// The metrics the iteration callback saw, in order.
    pub seen: Vec<IterationMetrics>,
    /// `metrics.jsonl` read back from disk.
    pub metrics: Vec<IterationMetrics>,
}

/// Trains `config` in a new run folder `dir` until its step budget is met; `on_iteration`
/// runs after every iteration (e.g. to kill a device).
pub fn train(
    dir: &Path,
    config: RunConfig<TrpoConfig>,
    mut on_iteration: impl FnMut(&IterationMetrics),
) -> FinishedRun {
    let folder = RunFolder::create(dir).expect("a fresh run folder");
    let metrics_path = folder.metrics_path();
    let mut session = Session::start(folder, config).expect("the session starts");
    let mut seen = Vec::new();
    let outcome = session
        .run(&AtomicBool::new(false), |m| {
            seen.push(m.clone());
            on_iteration(m);
        })
        .expect("the session runs to its budget");
    drop(session);
    let metrics = read_metrics(&metrics_path).expect("metrics.jsonl reads back");
    FinishedRun {
        outcome,
        seen,
        metrics,
    }
}

/// Mean of the `mean_return` of `metrics` (NaN-free iterations only).
pub fn mean_return(metrics: &[IterationMetrics]) -> f64 {
    let values: Vec<f64> = metrics
        .iter()
        .map(|m| m.mean_return)
        .filter(|r| r.is_finite())
        .collect();
    assert!(!values.is_empty(), "no iteration with a complete episode");
    values.iter().sum::<f64>() / values.len() as f64
}

/// The JSON line of each record: how `metrics.jsonl` compares to what a run reported
/// (NaN, written as `null`, compares equal to itself this way).
pub fn as_json(metrics: &[IterationMetrics]) -> Vec<String> {
    metrics
        .iter()
        .map(|m| serde_json::to_string(m).expect("metrics encode"))
        .collect()
}
