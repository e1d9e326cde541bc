//! One episode's steps as they arrive over a lossy link, and what the learner gets when some
//! never arrive: the episode cut at each gap into segments it can learn from correctly.
//!
//! [`EpisodeRuns`] keeps the steps received so far as runs of consecutive steps (batches may
//! arrive out of order once lost ones are sent again, and twice). When a gap stays — the
//! device no longer had the frame, or every request for it went unanswered — the episode is
//! cut there ([`EpisodeRuns::cut`]):
//!
//! - a record carries its observation, action, reward and log-probability, but not the next
//!   observation; so the segment before a gap drops its last record and bootstraps from the
//!   value of that record's observation, exactly as an episode truncated there would
//!   (GAE: δ = r + γ·V(s′) − V(s) needs s′, which was the dropped record's s);
//! - the segment after a gap starts mid-episode: GAE runs backwards from each segment's
//!   own end, so its first step needs nothing from before;
//! - the last segment ends as the episode did (terminated: no bootstrap; truncated or
//!   stopped: bootstrap from the final observation), when the end report came and the
//!   segment reaches it; otherwise it is cut like the others.
//!
//! Every step lost this way — the gaps and the record dropped before each — is counted.

use tether_shared::message::{RecordLayout, TransitionRecords};

use crate::trpo::batch::{EpisodeEnding, Trajectory};

/// Consecutive steps `[first, first + len)` and their records.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    first: u32,
    /// Whole records of the layout, each from a checked view.
    values: Vec<f32>,
}

/// What inserting a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// `steps` new steps were kept; `filled` of them lie below a step held before (they
    /// fill a gap: a resent frame).
    New {
        /// Steps added.
        steps: usize,
        /// Of them, steps below the highest step held before.
        filled: usize,
    },
    /// Every step was held already, bit for bit (a duplicate).
    Duplicate,
    /// Steps held already differ from these: the device contradicts itself.
    Conflict,
}

/// A piece of an episode the learner can take: its first step and its trajectory.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The episode step of its first record.
    pub first_step: u32,
    /// Its records and how it ends.
    pub trajectory: Trajectory,
}

/// The result of cutting an episode at its gaps.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// The segments, in step order (none may be empty).
    pub segments: Vec<Segment>,
    /// Steps of the episode the segments do not contain, below `length` (the episode's
    /// length when known, else one past the last step held).
    pub lost_steps: u64,
}

/// The steps of one episode received so far.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeRuns {
    layout: RecordLayout,
    /// Ascending, disjoint and never adjacent (adjacent runs are joined).
    runs: Vec<Run>,
}

impl EpisodeRuns {
    /// No step yet, records laid out as `layout`.
    pub fn new(layout: RecordLayout) -> Self {
        EpisodeRuns {
            layout,
            runs: Vec::new(),
        }
    }

    fn width(&self) -> usize {
        self.layout.width().max(1)
    }

    fn run_end(&self, run: &Run) -> u32 {
        run.first + (run.values.len() / self.width()) as u32
    }

    /// Steps held.
    pub fn held(&self) -> usize {
        self.runs.iter().map(|r| r.values.len()).sum::<usize>() / self.width()
    }

    /// Whether no step is held.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// One past the highest step held (0 when none is).
    pub fn end(&self) -> u32 {
        self.runs.last().map_or(0, |r| self.run_end(r))
    }

    /// Steps held consecutively from step 0.
    pub fn prefix(&self) -> u32 {
        match self.runs.first() {
            Some(run) if run.first == 0 => self.run_end(run),
            _ => 0,
        }
    }

    /// The stretches `[from, to)` held, ascending.
    pub fn stretches(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.runs.iter().map(|r| (r.first, self.run_end(r)))
    }

    /// The stretches `[from, to)` missing below [`EpisodeRuns::end`].
    pub fn gaps(&self) -> Vec<(u32, u32)> {
        let mut gaps = Vec::new();
        let mut next = 0;
        for run in &self.runs {
            if run.first > next {
                gaps.push((next, run.first));
            }
            next = self.run_end(run);
        }
        gaps
    }

    /// The records of steps `[0, prefix)`, when step 0 is held.
    pub fn prefix_records(&self) -> TransitionRecords<'_> {
        let values = match self.runs.first() {
            Some(run) if run.first == 0 => run.values.as_slice(),
            _ => &[],
        };
        TransitionRecords::from_checked(self.layout, values)
    }

    /// Adds checked `records` starting at `first_step`. Steps held already must be the same
    /// bits; the others are kept.
    pub fn insert(&mut self, first_step: u32, records: TransitionRecords<'_>) -> Inserted {
        let width = self.width();
        if records.layout() != self.layout || records.is_empty() {
            return Inserted::Conflict;
        }
        let count = records.len() as u32;
        let Some(last) = first_step.checked_add(count) else {
            return Inserted::Conflict;
        };
        let values = records.values();
        // Check every overlap first: a contradiction changes nothing.
        for run in &self.runs {
            let (start, end) = (run.first.max(first_step), self.run_end(run).min(last));
            if start >= end {
                continue;
            }
            let ours = &run.values
                [(start - run.first) as usize * width..(end - run.first) as usize * width];
            let theirs =
                &values[(start - first_step) as usize * width..(end - first_step) as usize * width];
            if !ours
                .iter()
                .zip(theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits())
            {
                return Inserted::Conflict;
            }
        }
        let highest = self.end();
        let mut added = 0;
        let mut filled = 0;
        for (from, to) in self.uncovered(first_step, last) {
            let piece =
                &values[(from - first_step) as usize * width..(to - first_step) as usize * width];
            self.add_run(Run {
                first: from,
                values: piece.to_vec(),
            });
            added += (to - from) as usize;
            filled += (to.min(highest).saturating_sub(from)) as usize;
        }
        match added {
            0 => Inserted::Duplicate,
            steps => Inserted::New { steps, filled },
        }
    }

    /// The stretches of `[from, to)` no run covers.
    fn uncovered(&self, from: u32, to: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut next = from;
        for run in &self.runs {
            let (start, end) = (run.first, self.run_end(run));
            if end <= next {
                continue;
            }
            if start >= to {
                break;
            }
            if start > next {
                out.push((next, start.min(to)));
            }
            next = next.max(end);
            if next >= to {
                break;
            }
        }
        if next < to {
            out.push((next, to));
        }
        out
    }

    /// Puts `run` (covering no held step) in place and joins it with its neighbours.
    fn add_run(&mut self, run: Run) {
        let at = self.runs.partition_point(|r| r.first < run.first);
        self.runs.insert(at, run);
        let mut i = at.saturating_sub(1);
        while i + 1 < self.runs.len() && i <= at {
            if self.run_end(&self.runs[i]) == self.runs[i + 1].first {
                let next = self.runs.remove(i + 1);
                self.runs[i].values.extend_from_slice(&next.values);
            } else {
                i += 1;
            }
        }
    }

    /// Cuts the episode at every gap (see the module documentation). `ending` is how the
    /// episode ended when its end report came, with the episode's `length`; the last run
    /// keeps that ending only if it reaches `length`.
    pub fn cut(&self, ending: Option<(&EpisodeEnding, u32)>) -> Cut {
        let mut segments = Vec::new();
        let mut kept = 0u64;
        let count = self.runs.len();
        for (i, run) in self.runs.iter().enumerate() {
            let end = self.run_end(run);
            let natural = match ending {
                Some((ending, length)) if i + 1 == count && end == length => Some(ending),
                _ => None,
            };
            let records = TransitionRecords::from_checked(self.layout, &run.values);
            let mut trajectory = Trajectory::new(self.layout);
            let segment = match natural {
                Some(ending) => trajectory
                    .extend(records)
                    .map(|()| set_ending(&mut trajectory, ending)),
                None => {
                    // Bootstrap from the last record's observation; the record goes.
                    let Some(last) = records.get(records.len().wrapping_sub(1)) else {
                        continue;
                    };
                    let bootstrap = last.observation.to_vec();
                    trajectory
                        .extend(records.take(records.len() - 1))
                        .map(|()| trajectory.end_truncated(&bootstrap).is_ok())
                }
            };
            if segment == Ok(true) && !trajectory.is_empty() {
                kept += trajectory.len() as u64;
                segments.push(Segment {
                    first_step: run.first,
                    trajectory,
                });
            }
        }
        let length = ending.map_or(self.end(), |(_, length)| length.max(self.end()));
        Cut {
            segments,
            lost_steps: u64::from(length).saturating_sub(kept),
        }
    }
}

/// Gives `trajectory` the episode's own ending; false if the final observation is unusable.
fn set_ending(trajectory: &mut Trajectory, ending: &EpisodeEnding) -> bool {
    match ending {
        EpisodeEnding::Terminated => {
            trajectory.end_terminated();
            true
        }
        EpisodeEnding::Truncated { final_obs } => trajectory.end_truncated(final_obs).is_ok(),
    }
}

#[cfg(test)]
mod tests;
