//! What a checkpoint holds: enough to continue a run exactly where it stopped.

use serde::{Deserialize, Serialize};

use crate::rollout::RejectionCounts;
use crate::trpo::TrpoState;

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
