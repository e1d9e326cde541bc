//! Episodes as a device delivers them, assembled from transition batches under the sample
//! hygiene rules: contiguous steps, the expected policy version, checked records
//! ([`TransitionBatch::records`]).

use tether_shared::message::{EpisodeEnd, EpisodeEndReason, RecordLayout, TransitionBatch};

use crate::trpo::batch::Trajectory;

/// One episode (or the leading part of one, cut at the batch size), checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectedEpisode {
    /// Episode id given by the device.
    pub episode: u32,
    /// Policy version that produced every step.
    pub policy_version: u32,
    /// The transitions as the device recorded them (observation, action as sampled before
    /// clamping, reward, the device's log-probability) and how the episode ended.
    pub trajectory: Trajectory,
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
        self.trajectory.len()
    }

    /// Whether the episode has no steps.
    pub fn is_empty(&self) -> bool {
        self.trajectory.is_empty()
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
    /// Values not whole records, not finite, or a discrete action that is no valid choice.
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
    layout: RecordLayout,
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
    /// Starts episode `episode` under policy `version`, for records laid out as `layout`.
    pub fn new(layout: RecordLayout, version: u32, episode: u32) -> Self {
        EpisodeAssembler {
            layout,
            version,
            episode,
            spoiled: None,
            data: CollectedEpisode {
                episode,
                policy_version: version,
                trajectory: Trajectory::new(layout),
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

    /// Checks a batch and appends its records, at most `limit` of them.
    pub fn feed(&mut self, batch: &TransitionBatch, limit: usize) -> Fed {
        if self.spoiled.is_some() {
            return Fed::Ignored;
        }
        let appended = self
            .check(batch)
            .and_then(|()| batch.records(self.layout).map_err(|_| Rejection::Malformed))
            .and_then(|records| {
                self.data
                    .trajectory
                    .extend(records.take(limit))
                    .map_err(|_| Rejection::Malformed)
            });
        match appended {
            Ok(()) => Fed::Appended,
            Err(rejection) => {
                self.spoiled = Some(rejection);
                Fed::Spoiled(rejection)
            }
        }
    }

    /// The sequencing rules: this episode, the uploaded policy, the next step.
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
        Ok(())
    }

    /// Cuts the episode after `keep` steps, bootstrapping from observation `keep` (which
    /// must have been received as the next record). Used at the batch-size limit.
    pub fn cut(mut self, keep: usize) -> Result<CollectedEpisode, Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        let trajectory = &mut self.data.trajectory;
        let final_obs = trajectory
            .records()
            .get(keep)
            .ok_or(Rejection::Inconsistent)?
            .observation
            .to_vec();
        trajectory.truncate(keep);
        trajectory
            .end_truncated(&final_obs)
            .map_err(|_| Rejection::Malformed)?;
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
        let sum = self.data.trajectory.total_reward();
        let tolerance = 1e-3 * (1.0 + sum.abs());
        if (sum - f64::from(end.episode_return)).abs() > tolerance {
            return Err(Rejection::Inconsistent);
        }
        match end.reason {
            EpisodeEndReason::Terminated => self.data.trajectory.end_terminated(),
            _ => self
                .data
                .trajectory
                .end_truncated(&end.final_obs)
                .map_err(|_| Rejection::Malformed)?,
        }
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
    use crate::trpo::batch::EpisodeEnding;
    use tether_shared::message::RecordAction;

    /// obs_dim 1, action width 1: [obs, action, reward, logp]
    const LAYOUT: RecordLayout = RecordLayout::new(1, RecordAction::Continuous { dim: 1 });

    fn assembler() -> EpisodeAssembler {
        EpisodeAssembler::new(LAYOUT, 3, 7)
    }

    /// One column of the episode's records.
    fn column(ep: &CollectedEpisode, part: impl Fn(&[f32]) -> f32) -> Vec<f32> {
        ep.trajectory
            .records()
            .values()
            .chunks_exact(4)
            .map(part)
            .collect()
    }

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
        let mut a = assembler();
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
        assert_eq!(column(&ep, |r| r[0]), vec![0.0, 1.0, 2.0]);
        assert_eq!(column(&ep, |r| r[1]), vec![0.1, 0.2, 0.3]);
        assert_eq!(column(&ep, |r| r[2]), vec![1.0, 2.0, 3.0]);
        assert_eq!(column(&ep, |r| r[3]), vec![-0.5, -0.6, -0.7]);
        assert_eq!(
            ep.trajectory.ending(),
            &EpisodeEnding::Truncated {
                final_obs: vec![9.0]
            }
        );
        assert_eq!(ep.complete_return, Some(6.0));
    }

    #[test]
    fn gaps_stale_versions_and_bad_values_spoil_the_episode() {
        let mut a = assembler();
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

        let mut b = assembler();
        assert_eq!(
            b.feed(&batch(7, 0, 2, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::StalePolicy)
        );
        let mut c = assembler();
        assert_eq!(
            c.feed(&batch(7, 0, 3, &[[f32::NAN, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::Malformed)
        );
        let mut d = assembler();
        assert_eq!(
            d.feed(&batch(8, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX),
            Fed::Spoiled(Rejection::WrongEpisode)
        );
    }

    #[test]
    fn end_summary_must_agree_with_received_steps() {
        let mut a = assembler();
        a.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        // The device says two steps: the last batch was lost.
        assert_eq!(
            a.finish(&end(7, 2, 1.0, EpisodeEndReason::Terminated)),
            Err(Rejection::Inconsistent)
        );
        let mut b = assembler();
        b.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(
            b.finish(&end(7, 1, 5.0, EpisodeEndReason::Terminated)),
            Err(Rejection::Inconsistent)
        );
        let mut c = assembler();
        c.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(
            c.finish(&end(7, 1, 1.0, EpisodeEndReason::Overrun)),
            Err(Rejection::DeviceDiscarded)
        );
    }

    #[test]
    fn cut_bootstraps_from_the_next_observation() {
        let mut a = assembler();
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
        assert_eq!(column(&ep, |r| r[2]), vec![1.0, 2.0]);
        assert_eq!(
            ep.trajectory.ending(),
            &EpisodeEnding::Truncated {
                final_obs: vec![2.0]
            }
        );
        assert_eq!(ep.complete_return, None);
        let mut b = assembler();
        b.feed(&batch(7, 0, 3, &[[0.0, 0.1, 1.0, -0.5]]), usize::MAX);
        assert_eq!(b.cut(1), Err(Rejection::Inconsistent));
    }
}
