//! Which parts of an upload have arrived: a few disjoint, sorted ranges of value indices.
//!
//! Chunks of a policy upload may arrive in any order (a lost chunk is resent after later
//! ones were taken), so the store keeps the received stretches rather than one count. The
//! host sends chunks mostly in order with a small window, so a handful of ranges suffices;
//! when a chunk would need more, it is refused and the host sends it again later, after
//! the stretches before it have joined.

use heapless::Vec;

/// Disjoint, non-adjacent, ascending ranges `[start, end)` of value indices, at most `N`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedRanges<const N: usize> {
    ranges: Vec<(u32, u32), N>,
}

/// The chunk would need more separate ranges than the tracker holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFragmented;

impl<const N: usize> ReceivedRanges<N> {
    /// Nothing received.
    pub const fn new() -> Self {
        ReceivedRanges { ranges: Vec::new() }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Records `[start, end)` as received, joining it with the ranges it touches or
    /// overlaps. An empty range changes nothing.
    pub fn insert(&mut self, start: u32, end: u32) -> Result<(), TooFragmented> {
        if start >= end {
            return Ok(());
        }
        // The ranges that touch or overlap [start, end) are contiguous in the list.
        let first = self.ranges.iter().position(|&(_, e)| e >= start);
        let Some(first) = first else {
            return self.ranges.push((start, end)).map_err(|_| TooFragmented);
        };
        let last = self
            .ranges
            .iter()
            .rposition(|&(s, _)| s <= end)
            .filter(|&last| last >= first);
        let Some(last) = last else {
            return self
                .ranges
                .insert(first, (start, end))
                .map_err(|_| TooFragmented);
        };
        let (s0, _) = self.ranges[first];
        let (_, e1) = self.ranges[last];
        self.ranges[first] = (start.min(s0), end.max(e1));
        for _ in first + 1..=last {
            self.ranges.remove(first + 1);
        }
        Ok(())
    }

    /// Whether `[0, len)` has arrived entirely.
    pub fn is_complete(&self, len: u32) -> bool {
        match self.ranges.first() {
            None => len == 0,
            Some(&(start, end)) => start == 0 && end >= len,
        }
    }

    /// The received ranges, ascending.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_join_in_any_order() {
        let mut r = ReceivedRanges::<4>::new();
        assert!(r.is_complete(0) && !r.is_complete(1));
        r.insert(240, 480).unwrap();
        r.insert(720, 900).unwrap();
        assert_eq!(r.ranges(), [(240, 480), (720, 900)]);
        r.insert(0, 240).unwrap();
        assert_eq!(r.ranges(), [(0, 480), (720, 900)], "adjacent ranges join");
        assert!(!r.is_complete(900));
        r.insert(480, 720).unwrap();
        assert_eq!(r.ranges(), [(0, 900)]);
        assert!(r.is_complete(900));
        r.insert(100, 200).unwrap();
        assert_eq!(r.ranges(), [(0, 900)], "a repeat changes nothing");
        r.insert(5, 5).unwrap();
        assert_eq!(r.ranges(), [(0, 900)]);
    }

    #[test]
    fn too_many_separate_ranges_are_refused_unchanged() {
        let mut r = ReceivedRanges::<2>::new();
        r.insert(10, 20).unwrap();
        r.insert(30, 40).unwrap();
        assert_eq!(r.insert(50, 60), Err(TooFragmented));
        assert_eq!(r.insert(0, 5), Err(TooFragmented));
        assert_eq!(r.ranges(), [(10, 20), (30, 40)]);
        r.insert(15, 35).unwrap();
        assert_eq!(r.ranges(), [(10, 40)], "a bridge joins two");
        r.insert(0, 100).unwrap();
        assert_eq!(r.ranges(), [(0, 100)]);
    }

    proptest! {
        /// Against a plain set of received indices: the ranges cover exactly the indices
        /// inserted, stay sorted and apart, and completeness agrees.
        #[test]
        fn ranges_match_a_plain_set(chunks in prop::collection::vec((0u32..200, 0u32..40), 0..30)) {
            let mut r = ReceivedRanges::<64>::new();
            let mut set = [false; 240];
            for (start, len) in chunks {
                r.insert(start, start + len).unwrap();
                for i in start..start + len {
                    set[i as usize] = true;
                }
            }
            let mut covered = [false; 240];
            let mut previous_end = None;
            for &(s, e) in r.ranges() {
                prop_assert!(s < e);
                if let Some(p) = previous_end {
                    prop_assert!(s > p, "ranges apart: {:?}", r.ranges());
                }
                previous_end = Some(e);
                for i in s..e {
                    covered[i as usize] = true;
                }
            }
            prop_assert_eq!(covered, set);
            let complete = (1..240u32).find(|&n| !set[(n - 1) as usize]).map_or(240, |n| n - 1);
            prop_assert!(r.is_complete(complete) || complete == 0);
            if complete < 240 {
                prop_assert!(!r.is_complete(complete + 1));
            }
        }
    }
}
