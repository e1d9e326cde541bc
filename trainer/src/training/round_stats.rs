//! What a round's accepted episodes say beyond the batch itself: how long the complete ones
//! were, and how the devices kept time (for `metrics.jsonl` and TensorBoard).

use crate::rollout::DeviceRollout;

/// Episode lengths and device timing over one round, all devices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundStats {
    /// Mean length in steps of the episodes that ran to their natural end (NaN when none
    /// did): the episodes `mean_return` averages over.
    pub mean_episode_length: f64,
    /// Longest control step in microseconds over the episodes the devices ended (0 when
    /// none did: an episode cut at the step quota has no timing report).
    pub worst_step_us: u32,
    /// Control steps that started past their deadline, summed over those episodes.
    pub missed_deadlines: u64,
}

impl RoundStats {
    /// The statistics of rollouts (any order; the results do not depend on it).
    pub fn of<'a>(rollouts: impl IntoIterator<Item = &'a DeviceRollout>) -> Self {
        let mut complete_steps = 0usize;
        let mut complete = 0usize;
        let mut worst_step_us = 0;
        let mut missed_deadlines = 0u64;
        for episode in rollouts.into_iter().flat_map(|r| &r.episodes) {
            if episode.complete_return.is_some() && !episode.is_empty() {
                complete_steps += episode.len();
                complete += 1;
            }
            worst_step_us = worst_step_us.max(episode.worst_step_us);
            missed_deadlines += u64::from(episode.missed_deadlines);
        }
        RoundStats {
            mean_episode_length: if complete == 0 {
                f64::NAN
            } else {
                complete_steps as f64 / complete as f64
            },
            worst_step_us,
            missed_deadlines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{CollectedEpisode, EpisodeEnding, RejectionCounts};

    fn episode(len: usize, complete: bool, worst: u32, missed: u32) -> CollectedEpisode {
        CollectedEpisode {
            episode: 0,
            policy_version: 1,
            observations: vec![0.0; len],
            actions: vec![0.0; len],
            rewards: vec![1.0; len],
            device_log_probs: vec![0.0; len],
            ending: EpisodeEnding::Terminated,
            complete_return: complete.then_some(len as f32),
            worst_step_us: worst,
            missed_deadlines: missed,
        }
    }

    fn rollout(episodes: Vec<CollectedEpisode>) -> DeviceRollout {
        DeviceRollout {
            episodes,
            rejections: RejectionCounts::default(),
        }
    }

    #[test]
    fn lengths_of_complete_episodes_and_timing_of_all() {
        let a = rollout(vec![episode(200, true, 50, 0), episode(30, false, 0, 0)]);
        let b = rollout(vec![episode(100, true, 900, 3), episode(10, true, 70, 1)]);
        let stats = RoundStats::of([&a, &b]);
        assert_eq!(stats.mean_episode_length, 310.0 / 3.0);
        assert_eq!(stats.worst_step_us, 900);
        assert_eq!(stats.missed_deadlines, 4);
    }

    #[test]
    fn no_complete_episode_means_an_undefined_length() {
        let a = rollout(vec![episode(30, false, 0, 0)]);
        let stats = RoundStats::of([&a]);
        assert!(stats.mean_episode_length.is_nan());
        assert_eq!((stats.worst_step_us, stats.missed_deadlines), (0, 0));
    }
}
