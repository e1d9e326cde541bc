//! From device rollouts to the learner's batch, in device order then episode order.

use crate::rollout::{CollectedEpisode, DeviceRollout, EpisodeEnding, RejectionCounts};
use crate::trpo::batch::{Episode, EpisodeEnd, RolloutBatch};

/// A batch with the bookkeeping the metrics need.
#[derive(Debug, Default)]
pub struct AssembledBatch {
    /// What the learner trains on.
    pub batch: RolloutBatch,
    /// Steps in the batch.
    pub steps: usize,
    /// Undiscounted returns of the episodes that ran to their natural end.
    pub complete_returns: Vec<f64>,
    /// Refusals summed over devices.
    pub rejections: RejectionCounts,
}

impl AssembledBatch {
    /// Mean of the complete episodes' returns (NaN when none completed).
    pub fn mean_return(&self) -> f64 {
        if self.complete_returns.is_empty() {
            f64::NAN
        } else {
            self.complete_returns.iter().sum::<f64>() / self.complete_returns.len() as f64
        }
    }
}

/// Joins rollouts given in device order.
pub fn assemble<'a>(
    rollouts: impl IntoIterator<Item = &'a DeviceRollout>,
    obs_dim: usize,
    action_width: usize,
) -> AssembledBatch {
    let mut out = AssembledBatch::default();
    for rollout in rollouts {
        out.rejections.add(&rollout.rejections);
        for episode in &rollout.episodes {
            if episode.is_empty() {
                continue;
            }
            out.steps += episode.len();
            if let Some(r) = episode.complete_return {
                out.complete_returns.push(f64::from(r));
            }
            out.batch
                .episodes
                .push(convert(episode, obs_dim, action_width));
        }
    }
    out
}

fn convert(episode: &CollectedEpisode, obs_dim: usize, action_width: usize) -> Episode {
    let rows = |values: &[f32], width: usize| -> Vec<Vec<f64>> {
        values
            .chunks_exact(width.max(1))
            .map(|row| row.iter().map(|&v| f64::from(v)).collect())
            .collect()
    };
    Episode {
        observations: rows(&episode.observations, obs_dim),
        actions: rows(&episode.actions, action_width),
        rewards: episode.rewards.iter().map(|&r| f64::from(r)).collect(),
        end: match &episode.ending {
            EpisodeEnding::Terminated => EpisodeEnd::Terminated,
            EpisodeEnding::Truncated { final_obs } => EpisodeEnd::Truncated {
                final_observation: final_obs.iter().map(|&v| f64::from(v)).collect(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(len: usize, complete: Option<f32>, ending: EpisodeEnding) -> CollectedEpisode {
        CollectedEpisode {
            episode: 0,
            policy_version: 1,
            observations: (0..len * 2).map(|i| i as f32).collect(),
            actions: (0..len).map(|i| i as f32 * 0.5).collect(),
            rewards: vec![1.0; len],
            device_log_probs: vec![0.0; len],
            ending,
            complete_return: complete,
            worst_step_us: 0,
            missed_deadlines: 0,
        }
    }

    #[test]
    fn keeps_device_then_episode_order_and_reshapes_rows() {
        let a = DeviceRollout {
            episodes: vec![episode(2, Some(2.0), EpisodeEnding::Terminated)],
            rejections: RejectionCounts {
                gaps: 1,
                discarded_episodes: 1,
                ..Default::default()
            },
        };
        let b = DeviceRollout {
            episodes: vec![
                episode(
                    3,
                    None,
                    EpisodeEnding::Truncated {
                        final_obs: vec![7.0, 8.0],
                    },
                ),
                episode(0, None, EpisodeEnding::Terminated),
            ],
            rejections: RejectionCounts::default(),
        };
        let out = assemble([&a, &b], 2, 1);
        assert_eq!(out.steps, 5);
        assert_eq!(out.batch.episodes.len(), 2, "empty episodes are dropped");
        assert_eq!(
            out.batch.episodes[0].observations,
            vec![vec![0.0, 1.0], vec![2.0, 3.0]]
        );
        assert_eq!(
            out.batch.episodes[1].actions,
            vec![vec![0.0], vec![0.5], vec![1.0]]
        );
        assert_eq!(
            out.batch.episodes[1].end,
            EpisodeEnd::Truncated {
                final_observation: vec![7.0, 8.0]
            }
        );
        assert_eq!(out.mean_return(), 2.0);
        assert_eq!(out.rejections.gaps, 1);
    }
}
