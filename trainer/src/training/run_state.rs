//! What a checkpoint holds: enough to continue a run exactly where it stopped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rollout::RejectionCounts;
use crate::run::checkpoint::{Checkpoint, CheckpointError, Payload, Upgradable};
use crate::trpo::TrpoState;
use crate::trpo::learner_state::{TrpoStateV1, TrpoStateV2};

/// Progress counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Iterations completed.
    pub iteration: u64,
    /// Environment steps learned from.
    pub env_steps: u64,
    /// Episodes that ran to their natural end.
    pub episodes: u64,
    /// Refusals summed over the run.
    pub rejections: RejectionCounts,
    /// Wall-clock seconds spent training, over every session of the run.
    pub wall_s: f64,
}

/// The checkpoint: progress and the learner, written atomically after every iteration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingState {
    /// Plant name the run trains (a resumed run must find the same plant).
    pub plant: String,
    /// Progress counters.
    pub progress: Progress,
    /// The learner: policy, value function, optimiser and normaliser.
    pub learner: TrpoState,
}

impl TrainingState {
    /// Writes the checkpoint atomically (see [`Checkpoint::save`]).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        Checkpoint::save(path, self)
    }

    /// Reads a checkpoint of the current format, of format 2 (before the gSDE settings) or
    /// of format 1 (written before the run's seed and step counts left the learner's
    /// settings); each continues exactly as it would have.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        Checkpoint::load_or_upgrade::<Self>(path)
    }
}

impl Upgradable for TrainingState {
    const EARLIER_VERSIONS: &'static [u32] = &[1, 2];

    fn upgrade(version: u32, payload: &Payload<'_>) -> Result<Self, CheckpointError> {
        match version {
            1 => payload.decode::<TrainingStateV1>().map(Into::into),
            _ => payload.decode::<TrainingStateV2>().map(Into::into),
        }
    }
}

/// [`TrainingState`] as checkpoint format 2 laid it out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingStateV2 {
    /// As [`TrainingState::plant`].
    pub plant: String,
    /// As [`TrainingState::progress`].
    pub progress: Progress,
    /// The learner in its format-2 layout.
    pub learner: TrpoStateV2,
}

impl From<TrainingStateV2> for TrainingState {
    fn from(old: TrainingStateV2) -> Self {
        TrainingState {
            plant: old.plant,
            progress: old.progress,
            learner: old.learner.into(),
        }
    }
}

/// [`TrainingState`] as checkpoint format 1 laid it out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingStateV1 {
    /// As [`TrainingState::plant`].
    pub plant: String,
    /// As [`TrainingState::progress`].
    pub progress: Progress,
    /// The learner in its format-1 layout.
    pub learner: TrpoStateV1,
}

impl From<TrainingStateV1> for TrainingState {
    fn from(old: TrainingStateV1) -> Self {
        TrainingState {
            plant: old.plant,
            progress: old.progress,
            learner: old.learner.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/v1-run`: a run folder written by tether before this layout (2
    /// iterations of pendulum, seed 5, [4]-wide networks, observation normaliser on).
    const V1_CHECKPOINT: &[u8] = include_bytes!("../../tests/fixtures/v1-run/checkpoint.bin");

    #[test]
    fn a_format_1_checkpoint_upgrades_with_its_seed_and_learner_intact() {
        let path = Path::new("v1-run/checkpoint.bin");
        let state: TrainingState =
            Checkpoint::decode_or_upgrade::<TrainingState>(path, V1_CHECKPOINT)
                .expect("a format-1 checkpoint reads");
        assert_eq!(state.plant, "pendulum");
        assert_eq!(
            (state.progress.iteration, state.progress.env_steps),
            (2, 2048)
        );
        let learner = &state.learner;
        assert_eq!(learner.seed, 5);
        assert_eq!(learner.updates_done, 2);
        assert_eq!(learner.config.policy_hidden, vec![4]);
        assert_eq!(learner.config.gamma, 0.9);
        assert!(learner.normalizer.is_some());
        // Pendulum, one hidden layer of 4: (3·4 + 4) + (4·1 + 1) weights, one log-std.
        assert_eq!(learner.policy_parameters.len(), 16 + 5 + 1);
        assert!(matches!(
            Checkpoint::decode::<TrainingState>(path, V1_CHECKPOINT),
            Err(CheckpointError::UnsupportedVersion { found: 1, .. })
        ));
    }

    /// `tests/fixtures/v2-run`: a run folder written by tether before the gSDE settings
    /// (format 2; same run as `v1-run`, made with the run settings at the top level).
    const V2_CHECKPOINT: &[u8] = include_bytes!("../../tests/fixtures/v2-run/checkpoint.bin");

    #[test]
    fn a_format_2_checkpoint_upgrades_with_plain_gaussian_exploration() {
        let path = Path::new("v2-run/checkpoint.bin");
        let state = Checkpoint::decode_or_upgrade::<TrainingState>(path, V2_CHECKPOINT)
            .expect("a format-2 checkpoint reads");
        assert_eq!(state.plant, "pendulum");
        assert_eq!(
            (state.progress.iteration, state.progress.env_steps),
            (2, 2048)
        );
        let learner = &state.learner;
        assert_eq!((learner.seed, learner.updates_done), (5, 2));
        assert_eq!(learner.config.policy_hidden, vec![4]);
        assert!(!learner.config.use_sde && learner.config.full_std);
        assert_eq!(learner.config.sde_sample_freq, -1);
        assert_eq!(learner.policy_parameters.len(), 16 + 5 + 1);
        assert!(matches!(
            Checkpoint::decode::<TrainingState>(path, V2_CHECKPOINT),
            Err(CheckpointError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn the_current_format_round_trips() {
        let dir = std::env::temp_dir().join(format!("tether-run-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("checkpoint.bin");
        let old: TrainingStateV1 =
            postcard::from_bytes(&V1_CHECKPOINT[20..V1_CHECKPOINT.len() - 4]).expect("payload");
        let state = TrainingState::from(old);
        state.save(&path).expect("save");
        let back = TrainingState::load(&path).expect("load");
        assert_eq!(back.learner, state.learner);
        assert_eq!(back.progress, state.progress);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
