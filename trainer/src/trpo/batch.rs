//! The trajectories a TRPO update learns from, as the rollout workers assemble them, and
//! their validation (untrusted data from devices is checked once, here).

use nalgebra::DMatrix;

use super::distribution::PolicyHead;

/// How an episode ended, which decides whether GAE bootstraps.
#[derive(Clone, Debug, PartialEq)]
pub enum EpisodeEnd {
    /// The plant reached a terminal state: the value after the last step is 0.
    Terminated,
    /// Cut by a time limit or the end of the batch: bootstrap from V(`final_observation`),
    /// the raw observation after the last action.
    Truncated {
        /// Raw (unnormalised) observation after the last step.
        final_observation: Vec<f64>,
    },
}

/// One episode (or episode fragment) of transitions, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Raw observation before each action, `obs_dim` values each.
    pub observations: Vec<Vec<f64>>,
    /// Action taken at each step: `action_dim` values (Gaussian, before clamping to the
    /// actuator bounds), or one value holding the index (categorical).
    pub actions: Vec<Vec<f64>>,
    /// Reward received after each action.
    pub rewards: Vec<f64>,
    /// How the episode ended.
    pub end: EpisodeEnd,
}

/// The episodes of one iteration, in a deterministic order (device, then episode).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutBatch {
    /// Episodes in collection order.
    pub episodes: Vec<Episode>,
}

/// Why a batch cannot be learned from.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// No transitions at all.
    #[error("the rollout batch has no transitions ({episodes} episodes, all empty)")]
    Empty {
        /// Episodes in the batch.
        episodes: usize,
    },
    /// Per-step vectors of different lengths.
    #[error(
        "episode {episode}: {observations} observations, {actions} actions and {rewards} rewards; they must match"
    )]
    LengthMismatch {
        /// Episode index in the batch.
        episode: usize,
        /// Observations recorded.
        observations: usize,
        /// Actions recorded.
        actions: usize,
        /// Rewards recorded.
        rewards: usize,
    },
    /// A vector of the wrong width.
    #[error("episode {episode} step {step}: {what} has {found} values, expected {expected}")]
    WrongWidth {
        /// Episode index in the batch.
        episode: usize,
        /// Step index in the episode (the final observation counts as step = length).
        step: usize,
        /// "observation", "action" or "final observation".
        what: &'static str,
        /// Values found.
        found: usize,
        /// Values expected.
        expected: usize,
    },
    /// NaN or infinity in the data.
    #[error("episode {episode} step {step}: {what} is not finite")]
    NonFinite {
        /// Episode index in the batch.
        episode: usize,
        /// Step index in the episode.
        step: usize,
        /// "observation", "action", "reward" or "final observation".
        what: &'static str,
    },
    /// A categorical action that is not an integer in range.
    #[error(
        "episode {episode} step {step}: categorical action {value} is not an index below {n_actions}"
    )]
    InvalidActionIndex {
        /// Episode index in the batch.
        episode: usize,
        /// Step index in the episode.
        step: usize,
        /// The stored value.
        value: f64,
        /// Number of discrete actions.
        n_actions: usize,
    },
}

impl RolloutBatch {
    /// Total transitions over all episodes.
    pub fn len(&self) -> usize {
        self.episodes.iter().map(|e| e.rewards.len()).sum()
    }

    /// True when there are no transitions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks shapes, finiteness and action indices against the policy's spec.
    pub fn validate(&self, obs_dim: usize, head: PolicyHead) -> Result<(), BatchError> {
        if self.is_empty() {
            return Err(BatchError::Empty {
                episodes: self.episodes.len(),
            });
        }
        for (e, episode) in self.episodes.iter().enumerate() {
            episode.validate(e, obs_dim, head)?;
        }
        Ok(())
    }

    /// All observations as columns, `obs_dim × len()`, episodes concatenated in order.
    pub fn observation_matrix(&self, obs_dim: usize) -> DMatrix<f64> {
        columns(obs_dim, self.episodes.iter().flat_map(|e| &e.observations))
    }

    /// All actions as columns, `action_rows × len()`.
    pub fn action_matrix(&self, action_rows: usize) -> DMatrix<f64> {
        columns(action_rows, self.episodes.iter().flat_map(|e| &e.actions))
    }
}

impl Episode {
    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// True when the episode holds no transition.
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    fn validate(&self, e: usize, obs_dim: usize, head: PolicyHead) -> Result<(), BatchError> {
        let n = self.rewards.len();
        if self.observations.len() != n || self.actions.len() != n {
            return Err(BatchError::LengthMismatch {
                episode: e,
                observations: self.observations.len(),
                actions: self.actions.len(),
                rewards: n,
            });
        }
        let check = |step, what, values: &[f64], expected| {
            if values.len() != expected {
                return Err(BatchError::WrongWidth {
                    episode: e,
                    step,
                    what,
                    found: values.len(),
                    expected,
                });
            }
            match values.iter().all(|v| v.is_finite()) {
                true => Ok(()),
                false => Err(BatchError::NonFinite {
                    episode: e,
                    step,
                    what,
                }),
            }
        };
        for t in 0..n {
            check(t, "observation", &self.observations[t], obs_dim)?;
            check(t, "action", &self.actions[t], head.action_rows())?;
            check(t, "reward", &self.rewards[t..t + 1], 1)?;
            if let PolicyHead::Categorical { n_actions } = head {
                let value = self.actions[t][0];
                if value < 0.0 || value.fract() != 0.0 || value >= n_actions as f64 {
                    return Err(BatchError::InvalidActionIndex {
                        episode: e,
                        step: t,
                        value,
                        n_actions,
                    });
                }
            }
        }
        if let EpisodeEnd::Truncated { final_observation } = &self.end {
            check(n, "final observation", final_observation, obs_dim)?;
        }
        Ok(())
    }
}

fn columns<'a>(rows: usize, vectors: impl Iterator<Item = &'a Vec<f64>>) -> DMatrix<f64> {
    let data: Vec<f64> = vectors.flat_map(|v| v.iter().copied()).collect();
    let n = data.len().checked_div(rows).unwrap_or(0);
    DMatrix::from_vec(rows, n, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(n: usize) -> Episode {
        Episode {
            observations: vec![vec![0.1, 0.2]; n],
            actions: vec![vec![0.0]; n],
            rewards: vec![1.0; n],
            end: EpisodeEnd::Terminated,
        }
    }

    const GAUSS: PolicyHead = PolicyHead::DiagGaussian { action_dim: 1 };

    #[test]
    fn accepts_a_well_formed_batch_and_lays_it_out_as_columns() {
        let batch = RolloutBatch {
            episodes: vec![episode(2), episode(3)],
        };
        assert_eq!(batch.validate(2, GAUSS), Ok(()));
        let obs = batch.observation_matrix(2);
        assert_eq!(obs.shape(), (2, 5));
        assert_eq!(obs[(1, 4)], 0.2);
    }

    #[test]
    fn rejects_empty_mismatched_non_finite_and_bad_indices_with_context() {
        let empty = RolloutBatch {
            episodes: vec![episode(0)],
        };
        assert_eq!(
            empty.validate(2, GAUSS),
            Err(BatchError::Empty { episodes: 1 })
        );
        let mut short = episode(3);
        short.actions.pop();
        let err = RolloutBatch {
            episodes: vec![short],
        }
        .validate(2, GAUSS);
        assert!(matches!(
            err,
            Err(BatchError::LengthMismatch { actions: 2, .. })
        ));
        let mut nan = episode(3);
        nan.observations[2][1] = f64::NAN;
        let err = RolloutBatch {
            episodes: vec![episode(1), nan],
        }
        .validate(2, GAUSS);
        assert_eq!(
            err,
            Err(BatchError::NonFinite {
                episode: 1,
                step: 2,
                what: "observation"
            })
        );
        assert!(
            err.expect_err("error")
                .to_string()
                .contains("episode 1 step 2")
        );
        let mut wide = episode(1);
        wide.end = EpisodeEnd::Truncated {
            final_observation: vec![0.0; 3],
        };
        assert!(matches!(
            RolloutBatch {
                episodes: vec![wide]
            }
            .validate(2, GAUSS),
            Err(BatchError::WrongWidth {
                what: "final observation",
                ..
            })
        ));
        let mut bad_index = episode(1);
        bad_index.actions[0][0] = 2.5;
        assert!(matches!(
            RolloutBatch {
                episodes: vec![bad_index]
            }
            .validate(2, PolicyHead::Categorical { n_actions: 3 }),
            Err(BatchError::InvalidActionIndex { .. })
        ));
    }
}
