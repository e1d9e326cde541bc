//! What a round's accepted episodes say beyond the batch itself: how long the complete ones
//! were, and how the devices kept time (for `metrics.jsonl` and TensorBoard).

use crate::rollout::{CollectedEpisode, DeviceRollout};

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
    /// Control steps whose action a device's rate limit changed, summed over those
    /// episodes.
    pub rate_limited_steps: u64,
}

/// The few facts about one episode the statistics need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpisodeFacts {
    /// Steps kept.
    pub len: usize,
    /// Whether it ran to its natural end (it has a complete return).
    pub complete: bool,
    /// Longest control step the device measured, µs.
    pub worst_step_us: u32,
    /// Control steps that started late.
    pub missed_deadlines: u32,
    /// Control steps the rate limit changed.
    pub rate_limited_steps: u32,
}

impl EpisodeFacts {
    /// The facts of a collected episode.
    pub fn of(episode: &CollectedEpisode) -> Self {
        EpisodeFacts {
            // A cut episode's length is the device's, not its last segment's.
            len: episode
                .episode_length
                .map_or(episode.len(), |length| length as usize),
            complete: episode.complete_return.is_some(),
            worst_step_us: episode.worst_step_us,
            missed_deadlines: episode.missed_deadlines,
            rate_limited_steps: episode.rate_limited_steps,
        }
    }
}

impl RoundStats {
    /// The statistics of the devices' rollouts.
    pub fn of<'a>(rollouts: impl IntoIterator<Item = &'a DeviceRollout>) -> Self {
        Self::of_episodes(
            rollouts
                .into_iter()
                .flat_map(|r| &r.episodes)
                .map(EpisodeFacts::of),
        )
    }

    /// The statistics of episodes (any order; the results do not depend on it).
    pub fn of_episodes(episodes: impl IntoIterator<Item = EpisodeFacts>) -> Self {
        let (mut complete_steps, mut complete) = (0usize, 0usize);
        let (mut worst_step_us, mut missed_deadlines, mut rate_limited_steps) = (0, 0u64, 0u64);
        for episode in episodes {
            if episode.complete && episode.len > 0 {
                complete_steps += episode.len;
                complete += 1;
            }
            worst_step_us = worst_step_us.max(episode.worst_step_us);
            missed_deadlines += u64::from(episode.missed_deadlines);
            rate_limited_steps += u64::from(episode.rate_limited_steps);
        }
        RoundStats {
            mean_episode_length: if complete == 0 {
                f64::NAN
            } else {
                complete_steps as f64 / complete as f64
            },
            worst_step_us,
            missed_deadlines,
            rate_limited_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(len: usize, complete: bool, worst_step_us: u32, missed: u32) -> EpisodeFacts {
        EpisodeFacts {
            len,
            complete,
            worst_step_us,
            missed_deadlines: missed,
            rate_limited_steps: missed * 10,
        }
    }

    #[test]
    fn lengths_of_complete_episodes_and_timing_of_all() {
        let stats = RoundStats::of_episodes([
            facts(200, true, 50, 0),
            facts(30, false, 0, 0),
            facts(100, true, 900, 3),
            facts(10, true, 70, 1),
        ]);
        assert_eq!(stats.mean_episode_length, 310.0 / 3.0);
        assert_eq!(stats.worst_step_us, 900);
        assert_eq!(stats.missed_deadlines, 4);
        assert_eq!(stats.rate_limited_steps, 40);
    }

    #[test]
    fn no_complete_episode_means_an_undefined_length() {
        let stats = RoundStats::of_episodes([facts(30, false, 0, 0), facts(0, true, 0, 0)]);
        assert!(stats.mean_episode_length.is_nan());
        assert_eq!((stats.worst_step_us, stats.missed_deadlines), (0, 0));
        assert!(RoundStats::of([]).mean_episode_length.is_nan());
    }
}
