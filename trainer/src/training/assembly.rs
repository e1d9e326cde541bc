//! From device rollouts to the learner's batch, in device order then episode order.

use tether_shared::message::RecordLayout;

use crate::rollout::{DeviceRollout, RejectionCounts};
use crate::trpo::batch::RolloutBatch;

/// A batch with the bookkeeping the metrics need.
#[derive(Debug)]
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

/// Joins rollouts given in device order; every episode's records are laid out as `layout`
/// (the plant's). An episode of another layout cannot come from these devices' assemblers;
/// it would be counted as malformed, not learned from.
pub fn assemble<'a>(
    rollouts: impl IntoIterator<Item = &'a DeviceRollout>,
    layout: RecordLayout,
) -> AssembledBatch {
    let mut out = AssembledBatch {
        batch: RolloutBatch::new(layout),
        steps: 0,
        complete_returns: Vec::new(),
        rejections: RejectionCounts::default(),
    };
    for rollout in rollouts {
        out.rejections.add(&rollout.rejections);
        for episode in &rollout.episodes {
            // A cut episode's statistics ride on its last segment, which the cuts may have
            // left empty: it still counts, but gives the learner nothing.
            if !episode.is_empty() {
                if out.batch.push(&episode.trajectory).is_err() {
                    out.rejections.discarded_episodes += 1;
                    out.rejections.malformed += 1;
                    continue;
                }
                out.steps += episode.len();
            }
            if let Some(r) = episode.complete_return {
                out.complete_returns.push(f64::from(r));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tether_shared::message::RecordAction;

    use super::*;
    use crate::rollout::CollectedEpisode;
    use crate::trpo::batch::fixtures::trajectory;
    use crate::trpo::batch::{EpisodeEnding, EpisodeView};

    const LAYOUT: RecordLayout = RecordLayout::new(2, RecordAction::Continuous { dim: 1 });

    fn episode(len: usize, complete: Option<f32>, ending: EpisodeEnding) -> CollectedEpisode {
        let steps: Vec<([f32; 2], [f32; 1])> = (0..len)
            .map(|i| ([2.0 * i as f32, 2.0 * i as f32 + 1.0], [i as f32 * 0.5]))
            .collect();
        let steps: Vec<(&[f32], &[f32], f32)> = steps
            .iter()
            .map(|(o, a)| (o.as_slice(), a.as_slice(), 1.0))
            .collect();
        CollectedEpisode {
            episode: 0,
            first_step: 0,
            policy_version: 1,
            trajectory: trajectory(LAYOUT, &steps, ending),
            complete_return: complete,
            episode_length: complete.map(|_| len as u32),
            worst_step_us: 0,
            missed_deadlines: 0,
            rate_limited_steps: 0,
        }
    }

    /// An episode cut at a gap arrives as segments: the ones before the gap carry no
    /// statistics, the last carries the device's return and length even when the cut left
    /// it without a step. The learner gets the segments' steps only; the iteration's mean
    /// return and mean episode length are the device's, counted once.
    #[test]
    fn a_cut_episode_counts_once_with_the_devices_statistics() {
        let before_gap = episode(
            3,
            None,
            EpisodeEnding::Truncated {
                final_obs: vec![6.0, 7.0],
            },
        );
        let mut emptied_last = episode(0, Some(9.0), EpisodeEnding::Terminated);
        emptied_last.first_step = 8;
        emptied_last.episode_length = Some(10);
        let whole = episode(4, Some(3.0), EpisodeEnding::Terminated);
        let rollout = DeviceRollout {
            episodes: vec![before_gap, emptied_last, whole],
            rejections: RejectionCounts::default(),
            action_rate_limit: None,
        };
        let out = assemble([&rollout], LAYOUT);
        assert_eq!(out.steps, 3 + 4);
        assert_eq!(
            out.batch.episodes().count(),
            2,
            "the empty segment adds no episode"
        );
        assert_eq!(out.mean_return(), (9.0 + 3.0) / 2.0);
        let stats = crate::training::round_stats::RoundStats::of([&rollout]);
        assert_eq!(stats.mean_episode_length, (10.0 + 4.0) / 2.0);
    }

    #[test]
    fn keeps_device_then_episode_order_as_columns() {
        let a = DeviceRollout {
            episodes: vec![episode(2, Some(2.0), EpisodeEnding::Terminated)],
            rejections: RejectionCounts {
                gaps: 1,
                discarded_episodes: 1,
                ..Default::default()
            },
            action_rate_limit: None,
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
            action_rate_limit: None,
        };
        let out = assemble([&a, &b], LAYOUT);
        assert_eq!(out.steps, 5);
        let episodes: Vec<EpisodeView<'_>> = out.batch.episodes().collect();
        assert_eq!(episodes.len(), 2, "empty episodes are dropped");
        let obs = out.batch.observation_matrix();
        assert_eq!(obs.column(1).as_slice(), &[2.0, 3.0]);
        assert_eq!(
            obs.column(2).as_slice(),
            &[0.0, 1.0],
            "device b's first step"
        );
        assert_eq!(
            out.batch
                .action_matrix()
                .row(0)
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [0.0, 0.5, 0.0, 0.5, 1.0]
        );
        assert_eq!(
            episodes[1].ending,
            &EpisodeEnding::Truncated {
                final_obs: vec![7.0, 8.0]
            }
        );
        assert_eq!(out.mean_return(), 2.0);
        assert_eq!(out.rejections.gaps, 1);
    }
}
