//! How large frames should be on a line that damages bytes: smaller frames survive more
//! often, larger ones waste less on headers.
//!
//! A frame of `k` payload bytes and `h` bytes of overhead (framing, and the answers and
//! requests each frame costs) arrives intact with probability `(1 − e)^(k + h)` on a line
//! that damages each byte with probability `e`; with lost frames sent again, the line
//! carries `(k + h) / (k · (1 − e)^(k + h))` bytes per payload byte, least at
//! `k (k + h) ≈ h / e`, i.e. `k ≈ √(h / e)` when `k ≫ h`. At `e = 10⁻³` that is about 180
//! bytes (45 values); at `10⁻⁴` about 570 (140 values); below `10⁻⁵` the largest frame.
//!
//! `e` is estimated from what the host sees: frames lost per byte carried, counting
//! [`PRIOR_BYTES`] of clean line before the first byte, so that one unlucky frame on a
//! clean line does not shrink every frame at once (and a line that lost nothing keeps
//! full frames).

/// Bytes of clean line assumed before anything is counted.
pub const PRIOR_BYTES: f64 = 5_000.0;

/// Overhead charged to each frame, in bytes: about 14 of framing (tag, ids, length, CRC,
/// COBS, terminator) and about as much again for the acknowledgement or release it
/// causes in the other direction.
pub const FRAME_OVERHEAD: f64 = 32.0;

/// Counts of one direction of a line: bytes carried and frames lost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LineErrors {
    bytes: f64,
    lost_frames: f64,
}

impl LineErrors {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the totals so far (they only grow; smaller values are ignored).
    pub fn set_totals(&mut self, bytes: u64, lost_frames: u64) {
        self.bytes = self.bytes.max(bytes as f64);
        self.lost_frames = self.lost_frames.max(lost_frames as f64);
    }

    /// Counts `bytes` more carried, `lost` frames of them lost.
    pub fn add(&mut self, bytes: usize, lost: usize) {
        self.bytes += bytes as f64;
        self.lost_frames += lost as f64;
    }

    /// Estimated probability that a byte is damaged.
    pub fn byte_error_rate(&self) -> f64 {
        self.lost_frames / (self.bytes + PRIOR_BYTES)
    }

    /// The payload per frame, in f32 values, that costs the line least, between
    /// `min_values` and `max_values`.
    pub fn best_values(&self, min_values: usize, max_values: usize) -> usize {
        let e = self.byte_error_rate();
        if e <= 0.0 {
            return max_values;
        }
        let bytes = (FRAME_OVERHEAD / e).sqrt();
        ((bytes / 4.0) as usize).clamp(min_values.min(max_values), max_values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_line_gets_full_frames() {
        let mut line = LineErrors::new();
        assert_eq!(line.best_values(4, 240), 240);
        line.add(10_000_000, 0);
        assert_eq!(line.best_values(4, 240), 240);
        line.add(1_000_000, 1);
        assert_eq!(line.best_values(4, 240), 240, "one loss in ~10 MB");
    }

    #[test]
    fn noisy_lines_get_the_frame_size_that_costs_least() {
        for (rate, expected) in [(1e-3, 45usize), (1e-4, 141)] {
            let mut line = LineErrors::new();
            line.add(10_000_000, (10_000_000.0 * rate) as usize);
            let got = line.best_values(4, 240);
            let tolerance = expected / 10;
            assert!(got.abs_diff(expected) <= tolerance, "{rate}: {got} values");
        }
        let mut hostile = LineErrors::new();
        hostile.add(100_000, 10_000);
        assert_eq!(hostile.best_values(4, 240), 4, "never below the floor");
    }

    #[test]
    fn one_early_loss_does_not_shrink_frames_to_nothing() {
        let mut line = LineErrors::new();
        line.add(1_000, 1);
        assert!(
            line.best_values(4, 240) >= 100,
            "{}",
            line.best_values(4, 240)
        );
        line.set_totals(500, 0);
        assert_eq!(line.bytes, 1_000.0, "totals never go back");
    }
}
