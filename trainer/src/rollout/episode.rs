//! Episodes as a device delivers them, assembled from transition batches under the sample
//! hygiene rules: the expected episode and policy version, checked records
//! ([`TransitionBatch::records`]), an end report that agrees with the steps. Batches may
//! come out of order and twice (lost frames are sent again); an episode whose gaps stay is
//! cut into segments ([`super::gap`]) rather than discarded.

use tether_shared::message::{
    EpisodeEnd, EpisodeEndReason, RecordLayout, StepRange, TransitionBatch,
};

use super::gap::{Cut, EpisodeRuns, Inserted};
use crate::trpo::batch::{EpisodeEnding, Trajectory};

/// One episode, or one segment of it (cut at the step quota, or at a gap the link left),
/// checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectedEpisode {
    /// Episode id given by the device.
    pub episode: u32,
    /// The episode step of the first record (0 unless the episode was cut at a gap before).
    pub first_step: u32,
    /// Policy version that produced every step.
    pub policy_version: u32,
    /// The transitions as the device recorded them (observation, action as sampled before
    /// clamping, reward, the device's log-probability) and how the episode ended.
    pub trajectory: Trajectory,
    /// The undiscounted return if the episode ran to its natural end (terminated or time
    /// limit), on the episode's last segment; `None` when the batch cut it short.
    pub complete_return: Option<f32>,
    /// The episode's length in steps as its end report gave it, on its last segment (a cut
    /// episode's segments hold fewer steps than it ran); `None` without an end report.
    pub episode_length: Option<u32>,
    /// Longest control step the device measured, in microseconds (0 when cut).
    pub worst_step_us: u32,
    /// Control steps that started late.
    pub missed_deadlines: u32,
    /// Control steps whose action the device's rate limit changed (0 when cut).
    pub rate_limited_steps: u32,
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

    /// Episode 0 of policy 1 made of the records `values` (whole records of `layout`), cut
    /// (no return), with no timing facts: for the tests of what consumes episodes.
    #[cfg(test)]
    pub(crate) fn of_records(layout: RecordLayout, values: &[f32]) -> Self {
        let records = tether_shared::message::TransitionRecords::new_checked(layout, values)
            .expect("whole, valid records");
        let mut trajectory = Trajectory::new(layout);
        trajectory.extend(records).expect("same layout");
        CollectedEpisode {
            episode: 0,
            first_step: 0,
            policy_version: 1,
            trajectory,
            complete_return: None,
            episode_length: None,
            worst_step_us: 0,
            missed_deadlines: 0,
            rate_limited_steps: 0,
        }
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
    /// The episode end disagrees with what was received (length or return), or the device
    /// sent the same step twice with different values.
    Inconsistent,
    /// The host's log-probability of an action disagrees with the device's.
    LogProbMismatch,
}

/// What feeding a batch to an [`EpisodeAssembler`] did.
#[derive(Debug, PartialEq)]
pub enum Fed {
    /// `steps` new steps kept, `filled` of them inside a gap (a resent frame).
    Appended {
        /// Steps added.
        steps: usize,
        /// Of them, steps below a step held before.
        filled: usize,
    },
    /// Every step was held already (a frame sent twice).
    Duplicate,
    /// The batch was refused; the episode is spoiled and will be discarded.
    Spoiled(Rejection),
    /// Ignored: it belongs to an episode already discarded.
    Ignored,
}

/// An episode turned into what the learner gets.
#[derive(Debug, PartialEq)]
pub struct Finished {
    /// Its segments in step order (one for an episode that arrived whole).
    pub segments: Vec<CollectedEpisode>,
    /// Steps the device ran that the segments lack (gaps, and the record before each).
    pub lost_steps: u64,
    /// Whether the episode was cut at a gap.
    pub cut: bool,
}

/// Builds one episode from its batches and end report.
#[derive(Debug)]
pub struct EpisodeAssembler {
    layout: RecordLayout,
    version: u32,
    episode: u32,
    spoiled: Option<Rejection>,
    runs: EpisodeRuns,
    end: Option<EpisodeEnd>,
    /// Stretches `[from, to)` the host stopped waiting for; `to` may be
    /// [`StepRange::TO_END`] (the rest of the episode, end report included).
    given_up: Vec<(u32, u32)>,
}

impl EpisodeAssembler {
    /// Starts episode `episode` under policy `version`, for records laid out as `layout`.
    pub fn new(layout: RecordLayout, version: u32, episode: u32) -> Self {
        EpisodeAssembler {
            layout,
            version,
            episode,
            spoiled: None,
            runs: EpisodeRuns::new(layout),
            end: None,
            given_up: Vec::new(),
        }
    }

    /// The id of the episode being assembled.
    pub fn episode(&self) -> u32 {
        self.episode
    }

    /// Steps held so far.
    pub fn len(&self) -> usize {
        self.runs.held()
    }

    /// Whether no step is held.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Steps held consecutively from step 0.
    pub fn prefix(&self) -> u32 {
        self.runs.prefix()
    }

    /// One past the highest step held.
    pub fn end_step(&self) -> u32 {
        self.runs.end()
    }

    /// The first step not held and not given up (every step before it is settled; the
    /// device may forget them). `None` when the rest of the episode is given up.
    pub fn settled_prefix(&self) -> Option<u32> {
        let mut stretches = self.given_up.clone();
        stretches.extend(self.runs.stretches());
        stretches.sort_unstable();
        let mut next = 0u32;
        for (from, to) in stretches {
            if from > next {
                break;
            }
            if to == StepRange::TO_END {
                return None;
            }
            next = next.max(to);
        }
        Some(next)
    }

    /// Whether a rule was broken (the episode will be discarded).
    pub fn spoiled(&self) -> Option<Rejection> {
        self.spoiled
    }

    /// Whether the end report arrived.
    pub fn has_end(&self) -> bool {
        self.end.is_some()
    }

    /// Checks a batch and keeps its records (in any order; steps held already must repeat
    /// the same values).
    pub fn feed(&mut self, batch: &TransitionBatch) -> Fed {
        if self.spoiled.is_some() {
            return Fed::Ignored;
        }
        let inserted = self
            .check(batch.policy_version, batch.episode)
            .and_then(|()| batch.records(self.layout).map_err(|_| Rejection::Malformed))
            .map(|records| self.runs.insert(batch.first_step, records));
        match inserted {
            Ok(Inserted::New { steps, filled }) => Fed::Appended { steps, filled },
            Ok(Inserted::Duplicate) => Fed::Duplicate,
            Ok(Inserted::Conflict) => self.spoil(Rejection::Inconsistent),
            Err(rejection) => self.spoil(rejection),
        }
    }

    /// Takes the end report; an overrun or faulted episode, or one that contradicts the
    /// steps held, is spoiled. A repeated report changes nothing.
    pub fn set_end(&mut self, end: &EpisodeEnd) -> Result<(), Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        if self.end.is_some() {
            return Ok(());
        }
        let result = self.check(end.policy_version, end.episode).and_then(|()| {
            if matches!(
                end.reason,
                EpisodeEndReason::Overrun | EpisodeEndReason::Fault
            ) {
                Err(Rejection::DeviceDiscarded)
            } else if self.runs.end() > end.length {
                // Steps past the end the device reports.
                Err(Rejection::Inconsistent)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.end = Some(end.clone());
                Ok(())
            }
            Err(rejection) => {
                self.spoil(rejection);
                Err(rejection)
            }
        }
    }

    fn spoil(&mut self, rejection: Rejection) -> Fed {
        self.spoiled = Some(rejection);
        Fed::Spoiled(rejection)
    }

    /// The sequencing rules: this episode, the uploaded policy.
    fn check(&self, policy_version: u32, episode: u32) -> Result<(), Rejection> {
        if policy_version != self.version {
            return Err(Rejection::StalePolicy);
        }
        if episode != self.episode {
            return Err(Rejection::WrongEpisode);
        }
        Ok(())
    }

    /// The stretches still missing and still wanted: gaps below the highest step held,
    /// then — when the end report is missing and `ended` says the episode is over (a later
    /// one has begun) — the rest of it, end report included.
    pub fn missing(&self, ended: bool) -> Vec<StepRange> {
        if self.spoiled.is_some() {
            return Vec::new();
        }
        let mut wanted: Vec<(u32, u32)> = self.runs.gaps();
        let end = self.runs.end();
        match &self.end {
            Some(report) if end < report.length => wanted.push((end, report.length)),
            Some(_) => {}
            None if ended => wanted.push((end, StepRange::TO_END)),
            None => {}
        }
        wanted
            .into_iter()
            .filter(|&(from, to)| !self.given_up.iter().any(|&(gf, gt)| gf <= from && to <= gt))
            .map(|(from_step, to_step)| StepRange {
                episode: self.episode,
                from_step,
                to_step,
            })
            .collect()
    }

    /// Stops waiting for `[from, to)`.
    pub fn give_up(&mut self, from: u32, to: u32) {
        self.given_up.push((from, to));
    }

    /// Whether everything of the episode arrived: its end report and every step up to it.
    pub fn is_complete(&self) -> bool {
        self.end
            .as_ref()
            .is_some_and(|end| self.runs.prefix() == end.length && self.runs.gaps().is_empty())
    }

    /// Whether nothing more is awaited: complete, spoiled, or every missing stretch given
    /// up (`ended` as for [`EpisodeAssembler::missing`]).
    pub fn is_settled(&self, ended: bool) -> bool {
        self.spoiled.is_some()
            || self.is_complete()
            || ((self.end.is_some() || ended) && self.missing(ended).is_empty())
    }

    /// Cuts the episode after the first `keep` steps, bootstrapping from observation `keep`
    /// (which must be held, after no gap). Used at the step quota.
    pub fn cut_at(&self, keep: usize) -> Result<CollectedEpisode, Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        let records = self.runs.prefix_records();
        let final_obs = records
            .get(keep)
            .ok_or(Rejection::Inconsistent)?
            .observation
            .to_vec();
        let mut trajectory = Trajectory::new(self.layout);
        trajectory
            .extend(records.take(keep))
            .map_err(|_| Rejection::Malformed)?;
        trajectory
            .end_truncated(&final_obs)
            .map_err(|_| Rejection::Malformed)?;
        Ok(self.segment(0, trajectory))
    }

    /// What the learner gets of the settled episode: the whole episode when complete (its
    /// summary cross-checked against the steps), else its segments cut at the gaps.
    pub fn finish(self) -> Result<Finished, Rejection> {
        if let Some(rejection) = self.spoiled {
            return Err(rejection);
        }
        let ending = self.end.as_ref().map(|end| match end.reason {
            EpisodeEndReason::Terminated => EpisodeEnding::Terminated,
            _ => EpisodeEnding::Truncated {
                final_obs: end.final_obs.to_vec(),
            },
        });
        if let Some(end) = &self.end {
            if end.reason != EpisodeEndReason::Terminated {
                self.layout
                    .check_observation(&end.final_obs)
                    .map_err(|_| Rejection::Malformed)?;
            }
            if self.is_complete() {
                let records = self.runs.prefix_records();
                let sum: f64 = records.iter().map(|r| f64::from(r.reward)).sum();
                let tolerance = 1e-3 * (1.0 + sum.abs());
                if (sum - f64::from(end.episode_return)).abs() > tolerance {
                    return Err(Rejection::Inconsistent);
                }
            }
        }
        let Cut {
            segments,
            lost_steps,
        } = self
            .runs
            .cut(ending.as_ref().zip(self.end.as_ref().map(|e| e.length)));
        let cut = lost_steps > 0;
        let count = segments.len();
        let mut out = Vec::with_capacity(count);
        for (i, segment) in segments.into_iter().enumerate() {
            let mut collected = self.segment(segment.first_step, segment.trajectory);
            if i + 1 == count {
                self.add_summary(&mut collected);
            }
            out.push(collected);
        }
        if out.is_empty() && self.end.is_some() {
            // Nothing learnable survived the cuts; the statistics still count the episode.
            let mut empty = self.segment(0, Trajectory::new(self.layout));
            self.add_summary(&mut empty);
            out.push(empty);
        }
        Ok(Finished {
            segments: out,
            lost_steps,
            cut,
        })
    }

    fn segment(&self, first_step: u32, trajectory: Trajectory) -> CollectedEpisode {
        CollectedEpisode {
            episode: self.episode,
            first_step,
            policy_version: self.version,
            trajectory,
            complete_return: None,
            episode_length: None,
            worst_step_us: 0,
            missed_deadlines: 0,
            rate_limited_steps: 0,
        }
    }

    /// The end report's facts on the episode's last segment.
    fn add_summary(&self, last: &mut CollectedEpisode) {
        let Some(end) = &self.end else {
            return;
        };
        if matches!(
            end.reason,
            EpisodeEndReason::Terminated | EpisodeEndReason::Truncated
        ) {
            last.complete_return = Some(end.episode_return);
        }
        last.episode_length = Some(end.length);
        last.worst_step_us = end.worst_step_us;
        last.missed_deadlines = end.missed_deadlines;
        last.rate_limited_steps = end.rate_limited_steps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Step `s`'s record: observation `s`, action `s / 10`, reward `s + 1`, log-prob −0.5.
    fn step(s: u32) -> [f32; 4] {
        let s = s as f32;
        [s, s / 10.0, s + 1.0, -0.5]
    }

    fn steps(episode: u32, from: u32, to: u32) -> TransitionBatch {
        let records: Vec<[f32; 4]> = (from..to).map(step).collect();
        batch(episode, from, 3, &records)
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
            missed_deadlines: 2,
            rate_limited_steps: 0,
        }
    }

    /// The return of steps `0..n` as [`step`] makes them.
    fn sum(n: u32) -> f32 {
        (0..n).map(|s| s as f32 + 1.0).sum()
    }

    #[test]
    fn contiguous_batches_make_an_episode() {
        let mut a = assembler();
        assert_eq!(
            a.feed(&steps(7, 0, 2)),
            Fed::Appended {
                steps: 2,
                filled: 0
            }
        );
        a.feed(&steps(7, 2, 3));
        a.set_end(&end(7, 3, sum(3), EpisodeEndReason::Truncated))
            .unwrap();
        assert!(a.is_complete() && a.is_settled(false));
        assert!(a.missing(true).is_empty());
        let finished = a.finish().unwrap();
        assert_eq!((finished.cut, finished.lost_steps), (false, 0));
        let [ep] = finished.segments.as_slice() else {
            panic!("one segment");
        };
        assert_eq!(column(ep, |r| r[0]), vec![0.0, 1.0, 2.0]);
        assert_eq!(column(ep, |r| r[2]), vec![1.0, 2.0, 3.0]);
        assert_eq!(
            ep.trajectory.ending(),
            &EpisodeEnding::Truncated {
                final_obs: vec![9.0]
            }
        );
        assert_eq!((ep.first_step, ep.complete_return), (0, Some(sum(3))));
        assert_eq!(
            (ep.episode_length, ep.worst_step_us, ep.missed_deadlines),
            (Some(3), 40, 2)
        );
    }

    /// A lost batch sent again later fills its gap: the episode is whole, as if nothing
    /// happened; a batch received twice changes nothing.
    #[test]
    fn batches_out_of_order_and_twice_still_make_the_whole_episode() {
        let mut a = assembler();
        a.feed(&steps(7, 0, 2));
        a.feed(&steps(7, 4, 6));
        assert_eq!(
            a.missing(false),
            [StepRange {
                episode: 7,
                from_step: 2,
                to_step: 4
            }]
        );
        a.set_end(&end(7, 8, sum(8), EpisodeEndReason::Terminated))
            .unwrap();
        assert_eq!(
            a.missing(false),
            [
                StepRange {
                    episode: 7,
                    from_step: 2,
                    to_step: 4
                },
                StepRange {
                    episode: 7,
                    from_step: 6,
                    to_step: 8
                },
            ],
            "the end report tells how many steps are still to come"
        );
        assert_eq!(
            a.feed(&steps(7, 2, 4)),
            Fed::Appended {
                steps: 2,
                filled: 2
            }
        );
        assert_eq!(a.feed(&steps(7, 2, 4)), Fed::Duplicate);
        a.feed(&steps(7, 6, 8));
        let finished = a.finish().unwrap();
        assert!(!finished.cut);
        assert_eq!(finished.segments.len(), 1);
        assert_eq!(finished.segments[0].len(), 8);
        assert_eq!(
            finished.segments[0].trajectory.ending(),
            &EpisodeEnding::Terminated
        );
    }

    #[test]
    fn stale_versions_other_episodes_and_bad_values_spoil_the_episode() {
        let mut b = assembler();
        assert_eq!(
            b.feed(&batch(7, 0, 2, &[step(0)])),
            Fed::Spoiled(Rejection::StalePolicy)
        );
        assert_eq!(b.feed(&steps(7, 0, 1)), Fed::Ignored);
        assert_eq!(b.finish(), Err(Rejection::StalePolicy));
        let mut c = assembler();
        assert_eq!(
            c.feed(&batch(7, 0, 3, &[[f32::NAN, 0.1, 1.0, -0.5]])),
            Fed::Spoiled(Rejection::Malformed)
        );
        let mut d = assembler();
        assert_eq!(
            d.feed(&steps(8, 0, 1)),
            Fed::Spoiled(Rejection::WrongEpisode)
        );
        let mut e = assembler();
        e.feed(&steps(7, 0, 2));
        let mut contradiction = steps(7, 1, 2);
        contradiction.values[0] = 42.0;
        assert_eq!(
            e.feed(&contradiction),
            Fed::Spoiled(Rejection::Inconsistent)
        );
        assert!(
            e.is_settled(false),
            "nothing more is awaited of a spoiled episode"
        );
    }

    #[test]
    fn the_end_report_must_agree_with_the_steps() {
        let mut a = assembler();
        a.feed(&steps(7, 0, 2));
        assert_eq!(
            a.set_end(&end(7, 1, sum(1), EpisodeEndReason::Terminated)),
            Err(Rejection::Inconsistent),
            "steps past the reported length"
        );
        let mut b = assembler();
        b.feed(&steps(7, 0, 1));
        b.set_end(&end(7, 1, 5.0, EpisodeEndReason::Terminated))
            .unwrap();
        assert_eq!(b.finish(), Err(Rejection::Inconsistent), "return differs");
        let mut c = assembler();
        c.feed(&steps(7, 0, 1));
        assert_eq!(
            c.set_end(&end(7, 1, sum(1), EpisodeEndReason::Overrun)),
            Err(Rejection::DeviceDiscarded)
        );
        assert_eq!(c.finish(), Err(Rejection::DeviceDiscarded));
    }

    /// Steps 2–3 never come back: the episode is cut there; its statistics (return, length)
    /// are still the device's, on the last segment.
    #[test]
    fn a_gap_given_up_cuts_the_episode_and_keeps_its_statistics() {
        let mut a = assembler();
        a.feed(&steps(7, 0, 2));
        a.feed(&steps(7, 4, 6));
        a.set_end(&end(7, 6, sum(6), EpisodeEndReason::Terminated))
            .unwrap();
        assert!(!a.is_settled(false));
        a.give_up(2, 4);
        assert!(a.is_settled(false) && !a.is_complete());
        let finished = a.finish().unwrap();
        assert!(finished.cut);
        assert_eq!(
            finished.lost_steps, 3,
            "steps 2 and 3, and step 1 dropped to bootstrap"
        );
        let [first, last] = finished.segments.as_slice() else {
            panic!("two segments: {:?}", finished.segments);
        };
        assert_eq!((first.first_step, first.len()), (0, 1));
        assert_eq!(
            first.trajectory.ending(),
            &EpisodeEnding::Truncated {
                final_obs: vec![1.0]
            }
        );
        assert_eq!((first.complete_return, first.episode_length), (None, None));
        assert_eq!((last.first_step, last.len()), (4, 2));
        assert_eq!(last.trajectory.ending(), &EpisodeEnding::Terminated);
        assert_eq!(
            (last.complete_return, last.episode_length),
            (Some(sum(6)), Some(6))
        );
    }

    /// An episode whose end report never came is over once a later one began: its tail is
    /// wanted, and when given up the last run is cut too.
    #[test]
    fn a_missing_end_is_wanted_once_a_later_episode_began() {
        let mut a = assembler();
        a.feed(&steps(7, 0, 3));
        assert!(a.missing(false).is_empty(), "it may still be running");
        let tail = StepRange {
            episode: 7,
            from_step: 3,
            to_step: StepRange::TO_END,
        };
        assert_eq!(a.missing(true), [tail]);
        assert!(!a.is_settled(true));
        a.give_up(3, StepRange::TO_END);
        assert!(a.is_settled(true));
        let finished = a.finish().unwrap();
        assert_eq!(finished.segments.len(), 1);
        assert_eq!(finished.segments[0].len(), 2);
        assert_eq!(finished.segments[0].complete_return, None);
        assert_eq!(finished.lost_steps, 1);
    }

    #[test]
    fn cut_at_bootstraps_from_the_next_observation() {
        let mut a = assembler();
        a.feed(&steps(7, 0, 3));
        let ep = a.cut_at(2).unwrap();
        assert_eq!(column(&ep, |r| r[2]), vec![1.0, 2.0]);
        assert_eq!(
            ep.trajectory.ending(),
            &EpisodeEnding::Truncated {
                final_obs: vec![2.0]
            }
        );
        assert_eq!(ep.complete_return, None);
        let mut b = assembler();
        b.feed(&steps(7, 0, 1));
        assert_eq!(b.cut_at(1), Err(Rejection::Inconsistent));
    }
}
