//! Deterministic evaluation: run a policy's mean action (or most likely choice) for a
//! number of episodes and report the returns.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tether_shared::message::RunMode;
use tether_shared::seeds::evaluation_seed;
use tether_shared::{PlantDescription, PolicySpec};

use super::fleet::{Fleet, FleetError, FleetSpec};
use crate::rollout::{CollectRequest, DevicePool, Recovery};
use crate::run::config::TimeoutsConfig;
use crate::run::policy_file::PolicyFile;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    /// Devices could not be connected.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The policy does not drive the devices' plant.
    #[error("the policy does not fit {device}'s plant `{plant}`: {reason}")]
    PolicyMismatch {
        /// The device.
        device: String,
        /// Its plant.
        plant: String,
        /// What differs.
        reason: String,
    },
    /// Every device failed.
    #[error("no episode could be evaluated: {0}")]
    NoEpisodes(String),
}

/// What `tether eval --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvaluationReport {
    /// Episodes that ran to their natural end.
    pub episodes: usize,
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Standard deviation of the returns (population).
    pub std_return: f64,
    /// Mean episode length, steps.
    pub mean_length: f64,
    /// Every episode's return, in device then episode order.
    pub returns: Vec<f64>,
    /// Every episode's length in steps, in the same order.
    pub lengths: Vec<u32>,
    /// Every episode's mean reward per step over its last second of control (the plant's
    /// control rate in steps, or fewer if the episode, or its last segment after a gap in
    /// the link, is shorter), in the same order. With the
    /// length it tells an episode that ended with the task done (a pendulum still up) from
    /// one that did not, whatever its return: on a slower plant a late swing-up lowers the
    /// return without changing how the episode ends.
    pub final_second_rewards: Vec<f64>,
}

/// Runs `episodes` deterministic episodes of `policy`, split over the fleet's devices.
pub fn evaluate(
    spec: &FleetSpec,
    policy: &PolicyFile,
    episodes: u32,
    seed: u64,
) -> Result<EvaluationReport, EvaluationError> {
    let fleet = Fleet::connect(spec)?;
    for client in &fleet.clients {
        let plant = &client.info().plant;
        policy
            .spec
            .check_plant(plant)
            .map_err(|e| EvaluationError::PolicyMismatch {
                device: client.name().to_string(),
                plant: plant.name.to_string(),
                reason: e.to_string(),
            })?;
    }
    let _boards = fleet.boards;
    let mut pool = DevicePool::new(fleet.clients);
    evaluate_on(
        &mut pool,
        &EvaluationRound {
            spec: &policy.spec,
            params: Arc::new(policy.params.clone()),
            // Version 0 is never used by training, so the upload always happens.
            version: 0,
            episodes,
            seed,
            timeouts: &spec.timeouts,
            plant: &fleet.plant,
        },
    )
}

/// One round of deterministic episodes on devices already connected: what `tether eval`
/// runs, and what a training run with an `[evaluation]` table runs between iterations.
pub struct EvaluationRound<'a> {
    /// The policy's layout.
    pub spec: &'a PolicySpec,
    /// Its f32 parameters in the wire layout.
    pub params: Arc<Vec<f32>>,
    /// The policy version sent with them: a device already running this version is not
    /// sent the parameters again.
    pub version: u32,
    /// Episodes in all, split over the live devices.
    pub episodes: u32,
    /// The evaluation seed: the same seed gives every device the same episode starts (and,
    /// on randomised simulated plants, the same plants), so evaluations with one seed are
    /// comparable.
    pub seed: u64,
    /// Link timeouts.
    pub timeouts: &'a TimeoutsConfig,
    /// The devices' plant.
    pub plant: &'a PlantDescription,
}

/// Runs `round` on the live devices of `pool` and reports the episodes that ended.
pub fn evaluate_on(
    pool: &mut DevicePool,
    round: &EvaluationRound,
) -> Result<EvaluationReport, EvaluationError> {
    let recovery = Recovery::for_plant(round.timeouts, round.plant);
    let live = pool.live().max(1) as u32;
    let episodes = round.episodes;
    let results = pool.round(|device, rank| CollectRequest {
        version: round.version,
        spec: round.spec.clone(),
        params: round.params.clone(),
        first_episode: 0,
        seed: evaluation_seed(round.seed, device as u64),
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(episodes / live + u32::from((rank as u32) < episodes % live)),
        silence_timeout: Duration::from_secs_f64(round.timeouts.silence_s.max(0.01)),
        recovery,
    });
    let mut returns = Vec::new();
    let mut lengths = Vec::new();
    let mut final_second_rewards = Vec::new();
    // Whole steps in one second of control (at least one).
    let second = (round.plant.control_rate_hz.max(1.0).round() as usize).max(1);
    let mut errors = Vec::new();
    for result in &results {
        match &result.outcome {
            Ok(rollout) => {
                for episode in &rollout.episodes {
                    if let Some(r) = episode.complete_return {
                        returns.push(f64::from(r));
                        let length = episode.episode_length.unwrap_or(episode.len() as u32);
                        lengths.push(length);
                        final_second_rewards.push(episode.trajectory.mean_reward_of_last(second));
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if returns.is_empty() {
        return Err(EvaluationError::NoEpisodes(errors.join("; ")));
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    Ok(EvaluationReport {
        episodes: returns.len(),
        mean_return: mean,
        std_return: var.sqrt(),
        mean_length: lengths.iter().map(|&l| f64::from(l)).sum::<f64>() / n,
        returns,
        lengths,
        final_second_rewards,
    })
}
