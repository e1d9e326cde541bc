//! Safety: action clamping, non-finite detection and the host watchdog.

use tether_shared::ActionSpace;

/// Clamps each value of `action` to the plant's bounds, in place. A discrete action space
/// leaves `action` untouched (its index is checked by [`clamp_discrete`]).
///
/// Non-finite values are not "fixed" here: check with [`all_finite`] first and fault.
pub fn clamp_continuous(space: &ActionSpace, action: &mut [f32]) {
    if let ActionSpace::Continuous { low, high } = space {
        for ((a, &lo), &hi) in action.iter_mut().zip(low.iter()).zip(high.iter()) {
            *a = a.clamp(lo, hi);
        }
    }
}

/// Clamps a discrete choice to `0..n` (`n ≥ 1`); `None` for a continuous space.
pub fn clamp_discrete(space: &ActionSpace, index: usize) -> Option<usize> {
    match space {
        ActionSpace::Discrete { n } => Some(index.min((*n as usize).max(1) - 1)),
        ActionSpace::Continuous { .. } => None,
    }
}

/// Whether every value is finite (no NaN, no infinity).
pub fn all_finite(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// Fires when the host has been silent for longer than a timeout.
///
/// The runtime feeds it on every decoded host message and checks it while running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchdog {
    timeout_us: u64,
    last_feed_us: u64,
}

impl Watchdog {
    /// A watchdog with `timeout_us` microseconds of patience (0 disables it), fed at
    /// `now_us`.
    pub const fn new(timeout_us: u64, now_us: u64) -> Self {
        Watchdog {
            timeout_us,
            last_feed_us: now_us,
        }
    }

    /// Records host activity at `now_us`.
    pub fn feed(&mut self, now_us: u64) {
        self.last_feed_us = now_us;
    }

    /// Whether more than the timeout has passed since the last feed.
    pub fn expired(&self, now_us: u64) -> bool {
        self.timeout_us != 0 && now_us.saturating_sub(self.last_feed_us) > self.timeout_us
    }

    /// Time of the last feed, in µs of the device clock.
    pub fn last_feed_us(&self) -> u64 {
        self.last_feed_us
    }

    /// The timeout in µs (0: disabled).
    pub fn timeout_us(&self) -> u64 {
        self.timeout_us
    }
}

#[cfg(test)]
mod tests {
    use heapless::Vec;

    use super::*;

    #[test]
    fn clamps_each_dimension_to_its_bounds() {
        let space = ActionSpace::Continuous {
            low: Vec::from_slice(&[-1.0, 0.0]).unwrap(),
            high: Vec::from_slice(&[1.0, 5.0]).unwrap(),
        };
        let mut a = [3.0, -2.0];
        clamp_continuous(&space, &mut a);
        assert_eq!(a, [1.0, 0.0]);
        let mut b = [0.5, 4.0];
        clamp_continuous(&space, &mut b);
        assert_eq!(b, [0.5, 4.0]);
        assert_eq!(clamp_discrete(&space, 3), None);
        assert_eq!(clamp_discrete(&ActionSpace::Discrete { n: 3 }, 7), Some(2));
    }

    #[test]
    fn finiteness() {
        assert!(all_finite(&[0.0, -1.0, 1e30]));
        assert!(!all_finite(&[0.0, f32::NAN]));
        assert!(!all_finite(&[f32::NEG_INFINITY]));
    }

    #[test]
    fn watchdog_fires_after_timeout_only_and_zero_disables() {
        let mut w = Watchdog::new(1_000, 0);
        assert!(!w.expired(1_000));
        assert!(w.expired(1_001));
        w.feed(1_001);
        assert!(!w.expired(2_000));
        assert!(!Watchdog::new(0, 0).expired(u64::MAX));
    }
}
