//! The retransmit ring: the device's outgoing byte queue, which keeps the transition batches
//! and episode ends it sent until the host releases them, so a frame the line damaged is sent
//! again (selective repeat) instead of costing the transitions it carried.
//!
//! There is no second copy: frames are encoded once, into one fixed buffer, and stay there.
//! `buf[head..tail]` is waiting for the link; before `head` lie frames already written —
//! those the index ([`RetainedFrame`]s, ascending by position) names are kept, everything
//! else there (control frames, released data) is dead space. Dead space is reclaimed by
//! compacting the buffer when a new frame does not fit behind `tail`; when even that is not
//! enough for a data frame, the least recently sent kept frames are evicted (a host that
//! asks for them later is told they are gone and cuts the episode there). Frames not yet
//! written are never evicted: a link that cannot take the data at all still overruns the
//! episode, as before.
//!
//! A resend moves the kept frame to the end of the queue (a rotation inside the buffer, no
//! extra room needed) and marks it unsent. Each frame may be resent [`MAX_RESENDS`] times;
//! a host that keeps asking is refused, and every refusal, eviction and resend is counted.

use heapless::Vec;
use serde::Serialize;
use tether_shared::frame;
use tether_shared::message::{ReleaseMark, StepRange};

/// Times one frame may be sent again before further requests for it are refused.
pub const MAX_RESENDS: u8 = 16;

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free space in the outgoing queue right now.
    Full,
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("outgoing queue full")
    }
}

/// What a kept frame carries: steps of an episode, or its end report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataKey {
    /// Episode id.
    pub episode: u32,
    /// First step of a batch; for an end report, the episode's length.
    pub first_step: u32,
    /// Records in a batch; 0 for an end report.
    pub steps: u16,
    /// Whether the frame is the episode's end report.
    pub is_end: bool,
}

impl DataKey {
    /// A transition batch of `steps` records from `first_step`.
    pub const fn batch(episode: u32, first_step: u32, steps: u16) -> Self {
        DataKey {
            episode,
            first_step,
            steps,
            is_end: false,
        }
    }

    /// The end report of an episode of `length` steps.
    pub const fn end(episode: u32, length: u32) -> Self {
        DataKey {
            episode,
            first_step: length,
            steps: 0,
            is_end: true,
        }
    }

    fn released_by(&self, mark: &ReleaseMark) -> bool {
        if self.is_end {
            mark.releases_end(self.episode)
        } else {
            let end = self.first_step.saturating_add(u32::from(self.steps));
            mark.releases_steps(self.episode, end)
        }
    }

    /// Whether a selective acknowledgement of `range` covers the whole frame.
    fn received_in(&self, range: &StepRange) -> bool {
        self.named_by(range, StepRange::contains_steps)
    }

    /// Whether a resend request for `range` asks for (part of) the frame.
    fn wanted_by(&self, range: &StepRange) -> bool {
        self.named_by(range, StepRange::overlaps_steps)
    }

    /// Whether `range` names the frame: an end report it asks for, or steps `[first, end)`
    /// that `steps` accepts.
    fn named_by(&self, range: &StepRange, steps: fn(&StepRange, u32, u32, u32) -> bool) -> bool {
        if self.is_end {
            range.wants_end(self.episode, self.first_step)
        } else {
            let end = self.first_step.saturating_add(u32::from(self.steps));
            steps(range, self.episode, self.first_step, end)
        }
    }
}

/// One kept frame: what it carries and where its bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainedFrame {
    /// What it carries.
    pub key: DataKey,
    offset: u16,
    len: u16,
    resends: u8,
}

/// Counters of the ring's work, since the device started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitStats {
    /// Kept frames dropped, unreleased, to make room for new data.
    pub evicted: u32,
    /// Frames sent again on request.
    pub resent: u32,
    /// Resend requests refused: nothing of the range kept, or a frame's resends used up.
    pub refused: u32,
}

/// What a resend request found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResendOutcome {
    /// Frames of the range queued again, or still waiting for their first send.
    pub served: u32,
    /// Frames of the range whose resends are used up.
    pub exhausted: u32,
}

/// The outgoing queue of `N` bytes keeping up to `F` data frames for resending.
pub struct RetransmitQueue<const N: usize, const F: usize> {
    buf: [u8; N],
    head: usize,
    tail: usize,
    kept: Vec<RetainedFrame, F>,
    stats: RetransmitStats,
}

impl<const N: usize, const F: usize> Default for RetransmitQueue<N, F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const F: usize> RetransmitQueue<N, F> {
    /// An empty queue.
    pub const fn new() -> Self {
        // Frame offsets are kept in 16 bits.
        const { assert!(N <= u16::MAX as usize) };
        RetransmitQueue {
            buf: [0; N],
            head: 0,
            tail: 0,
            kept: Vec::new(),
            stats: RetransmitStats {
                evicted: 0,
                resent: 0,
                refused: 0,
            },
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.head..self.tail).unwrap_or(&[])
    }

    /// Number of bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// The frames kept for resending (written or not yet), oldest position first.
    pub fn kept(&self) -> &[RetainedFrame] {
        &self.kept
    }

    /// Counters.
    pub fn stats(&self) -> RetransmitStats {
        self.stats
    }

    /// Marks `n` pending bytes as written.
    pub fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail && self.kept.is_empty() {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Drops everything, pending bytes and kept frames.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
        self.kept.clear();
    }

    /// Stops keeping any frame (a new run or session: the host wants nothing of the old
    /// one). Pending bytes still go out.
    pub fn forget(&mut self) {
        self.kept.clear();
    }

    /// Whether a data frame of up to `bound` bytes (plus `reserve` free bytes) fits without
    /// evicting a kept frame.
    pub fn has_room(&self, bound: usize, reserve: usize) -> bool {
        let kept_bytes: usize = self
            .kept
            .iter()
            .filter(|k| self.is_sent(k))
            .map(|k| usize::from(k.len))
            .sum();
        self.kept.len() < F
            && N.saturating_sub(self.len() + kept_bytes) >= bound.saturating_add(reserve)
    }

    /// Whether a data frame of up to `bound` bytes (plus `reserve` free bytes) would fit once
    /// the host released every frame already written: false when the bytes still waiting
    /// for the link (or kept frames not yet written) take the room — the link, not the
    /// host's acknowledgements, is what is slow then.
    pub fn fits_once_released(&self, bound: usize, reserve: usize) -> bool {
        let unsent_kept = self.kept.iter().filter(|k| !self.is_sent(k)).count();
        unsent_kept < F && N.saturating_sub(self.len()) >= bound.saturating_add(reserve)
    }

    /// Encodes `message` as one frame at the end of the queue, leaving `reserve` bytes free,
    /// and returns its length. With a `key` the frame is kept for resending and `bound` (an
    /// upper bound of its encoded length) decides how much room to make, evicting the least
    /// recently sent kept frames if it must.
    pub fn push_frame<M: Serialize>(
        &mut self,
        message: &M,
        reserve: usize,
        key: Option<(DataKey, usize)>,
    ) -> Result<usize, QueueError> {
        let limit = N.saturating_sub(reserve);
        let n = match key {
            Some((key, bound)) => {
                self.make_room(bound, limit)?;
                let n = self.encode_at_tail(message, limit)?;
                self.keep(key, n)?;
                n
            }
            // A control frame is small: try where the queue ends first, compact if needed.
            None => match self.encode_at_tail(message, limit) {
                Ok(n) => n,
                Err(_) => {
                    self.compact();
                    self.encode_at_tail(message, limit)?
                }
            },
        };
        self.tail += n;
        Ok(n)
    }

    /// Encodes `message` behind `tail` (not moving it), below `limit`; its length.
    fn encode_at_tail<M: Serialize>(
        &mut self,
        message: &M,
        limit: usize,
    ) -> Result<usize, QueueError> {
        let space = self.buf.get_mut(self.tail..limit).ok_or(QueueError::Full)?;
        frame::encode(message, space)
            .map(|f| f.len())
            .map_err(|_| QueueError::Full)
    }

    /// Drops the kept frames `mark` releases.
    pub fn release(&mut self, mark: &ReleaseMark) {
        self.kept.retain(|k| !k.key.released_by(mark));
    }

    /// Drops the kept frames wholly inside `range`, which the host says it holds (as
    /// [`RetransmitQueue::release`], bytes still waiting for the link go out regardless).
    pub fn release_received(&mut self, range: &StepRange) {
        self.kept.retain(|k| !k.key.received_in(range));
    }

    /// Queues again every written frame `range` asks for (a frame not written yet is counted
    /// as served: it is on its way).
    pub fn resend(&mut self, range: &StepRange) -> ResendOutcome {
        let mut outcome = ResendOutcome::default();
        let mut i = 0;
        // Each rotation moves a matching frame behind every other; visit each frame once.
        let mut left = self.kept.len();
        while left > 0 {
            left -= 1;
            let Some(frame) = self.kept.get(i).copied() else {
                break;
            };
            if !frame.key.wanted_by(range) {
                i += 1;
                continue;
            }
            if !self.is_sent(&frame) {
                outcome.served += 1;
                i += 1;
            } else if frame.resends >= MAX_RESENDS {
                outcome.exhausted += 1;
                self.stats.refused = self.stats.refused.wrapping_add(1);
                i += 1;
            } else {
                self.rotate_to_end(i);
                outcome.served += 1;
                self.stats.resent = self.stats.resent.wrapping_add(1);
            }
        }
        outcome
    }

    /// Counts a refused request the caller answered itself (nothing of it kept).
    pub fn count_refusal(&mut self) {
        self.stats.refused = self.stats.refused.wrapping_add(1);
    }

    fn is_sent(&self, frame: &RetainedFrame) -> bool {
        usize::from(frame.offset) + usize::from(frame.len) <= self.head
    }

    /// Records the frame about to be written at `tail` as kept, evicting the oldest written
    /// kept frame when the index is full.
    fn keep(&mut self, key: DataKey, len: usize) -> Result<(), QueueError> {
        if self.kept.is_full() && !self.evict_oldest_sent() {
            return Err(QueueError::Full);
        }
        let frame = RetainedFrame {
            key,
            offset: self.tail as u16,
            len: len as u16,
            resends: 0,
        };
        self.kept.push(frame).map_err(|_| QueueError::Full)
    }

    /// Makes `bound` contiguous bytes free below `limit`: compacts, and when that is not
    /// enough evicts the least recently sent kept frames — until half the queue is free, so
    /// that the next frames fit without moving the buffer again (each compaction moves
    /// every live byte; on a host that releases nothing, evicting one frame per new frame
    /// would move the whole buffer for every batch).
    fn make_room(&mut self, bound: usize, limit: usize) -> Result<(), QueueError> {
        if self.tail + bound <= limit {
            return Ok(());
        }
        self.compact();
        if self.tail + bound <= limit {
            return Ok(());
        }
        let target = bound.max(limit / 2);
        while self.live_bytes() + target > limit {
            if !self.evict_oldest_sent() {
                break;
            }
        }
        self.compact();
        if self.tail + bound <= limit {
            Ok(())
        } else {
            Err(QueueError::Full)
        }
    }

    /// Bytes a compaction keeps: the kept frames already written, and everything from the
    /// first byte still to be written (or the frame the link is half-way through) on.
    fn live_bytes(&self) -> usize {
        let keep_from = self.keep_from();
        let kept: usize = self
            .kept
            .iter()
            .filter(|k| usize::from(k.offset) + usize::from(k.len) <= keep_from)
            .map(|k| usize::from(k.len))
            .sum();
        kept + (self.tail - keep_from)
    }

    /// Where the bytes a compaction moves as one block begin: the first byte still to be
    /// written, or the start of a kept frame the link is half-way through.
    fn keep_from(&self) -> usize {
        self.kept
            .iter()
            .find(|k| usize::from(k.offset) < self.head && !self.is_sent(k))
            .map_or(self.head, |k| usize::from(k.offset))
    }

    fn evict_oldest_sent(&mut self) -> bool {
        let Some(i) = self.kept.iter().position(|k| self.is_sent(k)) else {
            return false;
        };
        self.kept.remove(i);
        self.stats.evicted = self.stats.evicted.wrapping_add(1);
        true
    }

    /// Moves the kept written frames to the front, then the bytes still to be written;
    /// dead space disappears.
    fn compact(&mut self) {
        // A kept frame the link is half-way through stays whole with the pending bytes.
        let keep_from = self.keep_from();
        let mut write = 0;
        for k in self.kept.iter_mut() {
            let (offset, len) = (usize::from(k.offset), usize::from(k.len));
            if offset + len <= keep_from {
                self.buf.copy_within(offset..offset + len, write);
                k.offset = write as u16;
                write += len;
            }
        }
        let shift = keep_from - write;
        if shift == 0 {
            return;
        }
        self.buf.copy_within(keep_from..self.tail, write);
        for k in self.kept.iter_mut() {
            if usize::from(k.offset) >= keep_from {
                k.offset -= shift as u16;
            }
        }
        self.head -= shift;
        self.tail -= shift;
    }

    /// Moves written kept frame `i` behind everything else, unsent again.
    fn rotate_to_end(&mut self, i: usize) {
        let Some(frame) = self.kept.get(i).copied() else {
            return;
        };
        let (offset, len) = (usize::from(frame.offset), usize::from(frame.len));
        if let Some(region) = self.buf.get_mut(offset..self.tail) {
            region.rotate_left(len);
        }
        self.kept.remove(i);
        for k in self.kept.iter_mut().skip(i) {
            k.offset -= frame.len;
        }
        self.head -= len;
        let moved = RetainedFrame {
            offset: (self.tail - len) as u16,
            resends: frame.resends.saturating_add(1),
            ..frame
        };
        // The index had room for this frame a moment ago.
        let _ = self.kept.push(moved);
    }
}

#[cfg(test)]
mod tests;
