//! Recovering transition data a lossy link damaged: the host names what it holds
//! ([`ReleaseMark`], so the device may forget it) and what it lacks ([`StepRange`], which
//! the device sends again from its retransmit ring or declares gone).
//!
//! Episodes of a run are numbered upwards from the run's first id, so "before" compares ids
//! with wrapping arithmetic ([`episode_before`]): a run never spans anywhere near 2³¹
//! episodes.

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Whether episode id `a` comes before `b` in a run (wrapping comparison).
#[inline]
pub const fn episode_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A stretch of one episode's steps, `[from_step, to_step)`; a `to_step` of
/// [`StepRange::TO_END`] runs to the episode's end and includes its
/// [`super::EpisodeEnd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StepRange {
    /// Episode id.
    pub episode: u32,
    /// First step wanted.
    pub from_step: u32,
    /// One past the last step wanted, or [`StepRange::TO_END`].
    pub to_step: u32,
}

impl StepRange {
    /// `to_step` meaning "to the end of the episode, its end report included".
    pub const TO_END: u32 = u32::MAX;

    /// Whether the steps `[first_step, end_step)` of `episode` overlap the range.
    pub fn overlaps_steps(&self, episode: u32, first_step: u32, end_step: u32) -> bool {
        episode == self.episode && first_step < self.to_step && end_step > self.from_step
    }

    /// Whether the range asks for the end report of `episode`, whose last step is
    /// `length - 1`.
    pub fn wants_end(&self, episode: u32, length: u32) -> bool {
        episode == self.episode && self.to_step == Self::TO_END && length >= self.from_step
    }

    /// Whether the steps `[first_step, end_step)` of `episode` lie wholly inside the range.
    pub fn contains_steps(&self, episode: u32, first_step: u32, end_step: u32) -> bool {
        episode == self.episode && self.from_step <= first_step && end_step <= self.to_step
    }
}

/// The host's cumulative acknowledgement: it holds, or has given up, every step and end
/// report of the episodes before `episode`, and the steps of `episode` before `step`. The
/// device may drop what it keeps of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReleaseMark {
    /// The first episode not wholly released.
    pub episode: u32,
    /// Its first step not released.
    pub step: u32,
}

impl ReleaseMark {
    /// Whether the steps of `episode` up to (not including) `end_step` are released.
    pub fn releases_steps(&self, episode: u32, end_step: u32) -> bool {
        episode_before(episode, self.episode) || (episode == self.episode && end_step <= self.step)
    }

    /// Whether the end report of `episode` is released.
    pub fn releases_end(&self, episode: u32) -> bool {
        episode_before(episode, self.episode)
    }

    /// Whether the mark releases all the data `range` names: its steps, or with
    /// [`StepRange::TO_END`] the episode's end report.
    pub fn releases_range(&self, range: &StepRange) -> bool {
        if range.to_step == StepRange::TO_END {
            self.releases_end(range.episode)
        } else {
            self.releases_steps(range.episode, range.to_step)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_order_wraps() {
        assert!(episode_before(3, 4));
        assert!(!episode_before(4, 4));
        assert!(!episode_before(5, 4));
        assert!(episode_before(u32::MAX, 0), "the id after u32::MAX is 0");
        assert!(!episode_before(0, u32::MAX));
    }

    #[test]
    fn ranges_overlap_batches_and_ask_for_ends() {
        let r = StepRange {
            episode: 7,
            from_step: 40,
            to_step: 80,
        };
        assert!(r.overlaps_steps(7, 40, 80));
        assert!(r.overlaps_steps(7, 0, 41));
        assert!(r.overlaps_steps(7, 79, 100));
        assert!(!r.overlaps_steps(7, 0, 40));
        assert!(!r.overlaps_steps(7, 80, 120));
        assert!(!r.overlaps_steps(8, 40, 80));
        assert!(
            !r.wants_end(7, 80),
            "a bounded range never includes the end"
        );
        let tail = StepRange {
            to_step: StepRange::TO_END,
            ..r
        };
        assert!(tail.overlaps_steps(7, 200, 240));
        assert!(tail.wants_end(7, 200));
        assert!(
            tail.wants_end(7, 40),
            "an end right after the last step held"
        );
        assert!(!tail.wants_end(7, 39));
    }

    #[test]
    fn a_range_contains_only_batches_wholly_inside_it() {
        let r = StepRange {
            episode: 7,
            from_step: 40,
            to_step: 80,
        };
        assert!(r.contains_steps(7, 40, 80));
        assert!(r.contains_steps(7, 50, 60));
        assert!(!r.contains_steps(7, 39, 60), "starts before");
        assert!(!r.contains_steps(7, 60, 81), "ends after");
        assert!(!r.contains_steps(8, 40, 80), "another episode");
    }

    #[test]
    fn a_mark_releases_everything_before_it() {
        let m = ReleaseMark {
            episode: 7,
            step: 40,
        };
        assert!(m.releases_steps(6, 1000) && m.releases_end(6));
        assert!(m.releases_steps(7, 40));
        assert!(!m.releases_steps(7, 41));
        assert!(!m.releases_end(7));
        assert!(!m.releases_steps(8, 1));
    }

    /// Only data past the cumulative mark is acknowledged selectively.
    #[test]
    fn the_mark_covers_batches_before_it_and_ends_of_earlier_episodes() {
        let mark = ReleaseMark {
            episode: 5,
            step: 40,
        };
        let range = |episode, from_step, to_step| StepRange {
            episode,
            from_step,
            to_step,
        };
        assert!(mark.releases_range(&range(5, 20, 40)));
        assert!(!mark.releases_range(&range(5, 40, 60)), "past the mark");
        assert!(mark.releases_range(&range(4, 200, StepRange::TO_END)));
        assert!(
            !mark.releases_range(&range(5, 40, StepRange::TO_END)),
            "the mark's own episode's end is not released"
        );
        assert!(!mark.releases_range(&range(6, 0, 10)));
    }
}
