//! Episodes as a device delivers them, assembled from transition batches under the sample
//! hygiene rules: contiguous steps, the expected policy version, finite values.

use tether_shared::message::{EpisodeEnd, EpisodeEndReason, TransitionBatch};

/// How a collected episode ends, as the learner needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum EpisodeEnding {
    /// Reached a terminal state: no bootstrap.
    Terminated,
    /// Cut by the time limit or the batch size: bootstrap from this observation.
    Truncated {
        /// Observation after the last kept step.
        final_obs: Vec<f32>,
    },
}

/// One episode (or the leading part of one, cut at the batch size), checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectedEpisode {
    /// Episode id given by the device.
    pub episode: u32,
    /// Policy version that produced every step.
    pub policy_version: u32,
    /// Observations, `len × obs_dim`, row-major.
    pub observations: Vec<f32>,
    /// Actions as sampled (before clamping), `len × action_width`; a discrete action is its
    /// index.
    pub actions: Vec<f32>,
    /// Rewards, one per step.
    pub rewards: Vec<f32>,
    /// The device's log-probability of each action.
    pub device_log_probs: Vec<f32>,
    /// How it ended.
    pub ending: EpisodeEnding,
    /// The undiscounted return if the episode ran to its natural end (terminated or time
    /// limit); `None` when the batch cut it short.
    pub complete_return: Option<f32>,
    /// Longest control step the device measured, in microseconds (0 when cut).
    pub worst_step_us: u32,
    /// Control steps that started late.
    pub missed_deadlines: u32,
}

impl CollectedEpisode {
    /// Steps in the episode.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// Whether the episode has no steps.
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }
}

/// Why samples were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A batch's first step did not follow the previous one (a frame was lost).
    Gap,
    /// A batch or episode end carried another policy version than the one uploaded.
    StalePolicy,
    /// A batch belonged to an episode other than the one in progress.
    WrongEpisode,
    /// Values not a whole number of records, or not finite.
    Malformed,
    /// The device reported overrun or fault for the episode.
    DeviceDiscarded,
    /// The episode end disagrees with what was received (length or return).
    Inconsistent,
    /// The host's log-probability of an action disagrees with the device's.
    LogProbMismatch,
}

/// Builds one episode from its batches.
#[derive(Debug)]
pub struct EpisodeAssembler {
    obs_dim: usize,
    action_width: usize,
    version: u32,
    episode: u32,
    spoiled: Option<Rejection>,
    data: CollectedEpisode,
}

/// What feeding a batch to an [`EpisodeAssembler`] produced.
#[derive(Debug, PartialEq)]
pub enum Fed {
    /// Records appended.
    Appended,
    /// The batch was refused; the episode is spoiled and will be discarded at its end.
    Spoiled(Rejection),
    /// Ignored: it belongs to an episode already discarded.
    Ignored,
}

impl EpisodeAssembler {
    /// Starts episode `episode` under policy `version`.
    pub fn new(obs_dim: usize, action_width: usize, version: u32, episode: u32) -> Self {
        EpisodeAssembler {
            obs_dim,
            action_width,
            version,
            episode,
            spoiled: None,
            data: CollectedEpisode {
                episode,
                policy_version: version,
                observations: Vec::new(),
                actions: Vec::new(),
                rewards: Vec::new(),
                device_log_probs: Vec::new(),
                ending: EpisodeEnding::Terminated,
                complete_return: None,
                worst_step_us: 0,
                missed_deadlines: 0,
            },
        }
    }

    /// The id of the episode being assembled.
    pub fn episode(&self) -> u32 {
        self.episode
    }

    /// Steps kept so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no step has been kept.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether a rule was broken (the episode will be discarded).
    pub fn spoiled(&self) -> Option<Rejection> {
        self.spoiled
    }

    /// Width of one record on the wire.
    pub fn record_width(&self) -> usize {
        self.obs_dim + self.action_width + 2
    }

    /// Checks a batch and appends its records, at most `limit` of them.
    pub fn feed(&mut self, batch: &TransitionBatch, limit: usize) -> Fed {
        if self.spoiled.is_some() {
            return Fed::Ignored;
        }
        let verdict = self.check(batch);
        if let Err(rejection) = verdict {
            self.spoiled = Some(rejection);
            return Fed::Spoiled(rejection);
        }
        let width = self.record_width();
        for record in batch.values.chunks_exact(width).take(limit) {
            let (obs, rest) = record.split_at(self.obs_dim);
            let (action, rest) = rest.split_at(self.action_width);
            self.data.observations.extend_from_slice(obs);
            self.data.actions.extend_from_slice(action);
            self.data.rewards.push(rest[0]);
            self.data.device_log_probs.push(rest[1]);
        }
        Fed::Appended
    }

    fn check(&self, batch: &TransitionBatch) -> Result<(), Rejection> {
        if batch.policy_version != self.version {
            return Err(Rejection::StalePolicy);
        }
        if batch.episode != self.episode {
            return Err(Rejection::WrongEpisode);
        }
        if batch.first_step as usize != self.data.len() {
            return Err(Rejection::Gap);
        }
        let width = self.record_width();
        if batch.values.is_empty()
            || !batch.values.len().is_multiple_of(width)
            || batch.values.iter().any(|v| !v.is_finite())
        {
            return Err(Rejection::Malformed);
        }
        Ok(())
    }

    /// Observation `index` steps into the episode, if received.
    pub fn observation(&self, index: usize) -> Option<&[f32]> {
        self.data
            .observations
            .get(index * self.obs_dim..(index + 1) * self.obs_dim)
    }

    /// Cuts the episode after `keep` steps, bootstrapping from observation `keep` (which
    /// must have been received as the next record). Used at the batch-size limit.
    pub fn cut(mut self, keep: usize) -> Result<CollectedEpisode, Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        let final_obs = self
            .observation(keep)
            .ok_or(Rejection::Inconsistent)?
            .to_vec();
        self.data.observations.truncate(keep * self.obs_dim);
        self.data.actions.truncate(keep * self.action_width);
        self.data.rewards.truncate(keep);
        self.data.device_log_probs.truncate(keep);
        self.data.ending = EpisodeEnding::Truncated { final_obs };
        Ok(self.data)
    }

    /// Finishes the episode with the device's summary, cross-checking it.
    pub fn finish(mut self, end: &EpisodeEnd) -> Result<CollectedEpisode, Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        if end.policy_version != self.version {
            return Err(Rejection::StalePolicy);
        }
        if end.episode != self.episode {
            return Err(Rejection::WrongEpisode);
        }
        if matches!(
            end.reason,
            EpisodeEndReason::Overrun | EpisodeEndReason::Fault
        ) {
            return Err(Rejection::DeviceDiscarded);
        }
        // A lost final batch shows as a length mismatch: the steps never arrived.
        if end.length as usize != self.data.len() {
            return Err(Rejection::Inconsistent);
        }
        let sum: f64 = self.data.rewards.iter().map(|&r| f64::from(r)).sum();
        let tolerance = 1e-3 * (1.0 + sum.abs());
        if (sum - f64::from(end.episode_return)).abs() > tolerance {
            return Err(Rejection::Inconsistent);
        }
        self.data.ending = match end.reason {
            EpisodeEndReason::Terminated => EpisodeEnding::Terminated,
            _ => {
                if end.final_obs.len() != self.obs_dim
                    || end.final_obs.iter().any(|v| !v.is_finite())
                {
                    return Err(Rejection::Malformed);
                }
                EpisodeEnding::Truncated {
                    final_obs: end.final_obs.to_vec(),
                }
            }
        };
        if matches!(
            end.reason,
            EpisodeEndReason::Terminated | EpisodeEndReason::Truncated
        ) {
            self.data.complete_return = Some(end.episode_return);
        }
        self.data.worst_step_us = end.worst_step_us;
        self.data.missed_deadlines = end.missed_deadlines;
        Ok(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(episode: u32, first_step: u32, version: u32, records: &[[f32; 4]]) -> TransitionBatch {
        // obs_dim 1, action width 1: [obs, action, reward, logp]
        let mut values = heapless::Vec::new();
        for r in records {
            values.extend_from_slice(r).unwrap();
        }
        TransitionBatch {
            episode,
            first_step,
            policy_version: version,
            values,
        }
    }

    fn end(episode: u32, length: u32, ret: f32, reason: EpisodeEndReason) -> EpisodeEnd {
        EpisodeEnd {
            episode,
            policy_version: 3,
            length,
            episode_return: ret,
            reason,
            final_obs: heapless::Vec::from_slice(&[9.0]).unwrap(),
            worst_step_us: 40,
            missed_deadlines: 0,
        }
    }

    #[test]
    fn contiguous_batches_make_an_episode() {
        let mut a = EpisodeAssembler::new(1, 1, 3, 7);
        assert_eq!(
            a.feed(
                &batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5], [1.0, 0.2, 2.0, -0.6]]),
                usize::MAX
            ),
            Fed::Appended
        );
        assert_eq!(
            a.feed(&batch(7, 2, 3, &[[2.0, 0.3, 3.0, -0.7]]), usize::MAX),
            Fed::Appended
        );
        let ep = a
            .finish(&end(7, 3, 6.0, EpisodeEndReason::Truncated))
            .unwrap();
        assert_eq!(ep.observations, vec![0.0, 1.0, 2.0]);
        assert_eq!(ep.actions, vec![0.1, 0.2, 0.3]);
        assert_eq!(ep.rewards, vec![1.0, 2.0, 3.0]);
        assert_eq!(
            ep.ending,
            EpisodeEnding::Truncated {
                final_obs: vec![9.0]
            }
        );
        assert_eq!(ep.complete_return, Some(6.0));
    }

    #[test]
    fn gaps_stale_versions_and_bad_values_spoil_the_episode() {
        let mut a = EpisodeAssembler::new(1, 1, 3, 7);
        a.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(
            a.feed(&batch(7, 2, 3, &[[2.0, 0.3, 3.0, -0.7]]), usize::MAX),
            Fed::Spoiled(Rejection::Gap)
        );
        assert_eq!(
            a.feed(&batch(7, 1, 3, &[[2.0, 0.3, 3.0, -0.7]]), usize::MAX),
            Fed::Ignored
        );
        assert_eq!(
            a.finish(&end(7, 3, 6.0, EpisodeEndReason::Truncated)),
            Err(Rejection::Gap)
        );

        let mut b = EpisodeAssembler::new(1, 1, 3, 7);
        assert_eq!(
            b.feed(&batch(7, 0, 2, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::StalePolicy)
        );
        let mut c = EpisodeAssembler::new(1, 1, 3, 7);
        assert_eq!(
            c.feed(&batch(7, 0, 3, &[[f32::NAN, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::Malformed)
        );
        let mut d = EpisodeAssembler::new(1, 1, 3, 7);
        assert_eq!(
            d.feed(&batch(8, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::WrongEpisode)
        );
    }

    #[test]
    fn end_summary_must_agree_with_received_steps() {
        let mut a = EpisodeAssembler::new(1, 1, 3, 7);
        a.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        // The device says two steps: the last batch was lost.
        assert_eq!(
            a.finish(&end(7, 2, 1.0, EpisodeEndReason::Terminated)),
            Err(Rejection::Inconsistent)
        );
        let mut b = EpisodeAssembler::new(1, 1, 3, 7);
        b.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(
            b.finish(&end(7, 1, 5.0, EpisodeEndReason::Terminated)),
            Err(Rejection::Inconsistent)
        );
        let mut c = EpisodeAssembler::new(1, 1, 3, 7);
        c.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(
            c.finish(&end(7, 1, 1.0, EpisodeEndReason::Overrun)),
            Err(Rejection::DeviceDiscarded)
        );
    }

    #[test]
    fn cut_bootstraps_from_the_next_observation() {
        let mut a = EpisodeAssembler::new(1, 1, 3, 7);
        a.feed(
            &batch(
                7,
                0,
                3,
                &[
                    [0.0, 0.1, 1.0, -0.5],
                    [1.0, 0.2, 2.0, -0.6],
                    [2.0, 0.3, 3.0, -0.7],
                ],
            ),
            usize::MAX,
        );
        let ep = a.cut(2).unwrap();
        assert_eq!(ep.rewards, vec![1.0, 2.0]);
        assert_eq!(
            ep.ending,
            EpisodeEnding::Truncated {
                final_obs: vec![2.0]
            }
        );
        assert_eq!(ep.complete_return, None);
        let mut b = EpisodeAssembler::new(1, 1, 3, 7);
        b.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(b.cut(1), Err(Rejection::Inconsistent));
    }
}
