//! Safety: action clamping, non-finite detection and the host watchdog.

use tether_shared::ActionSpace;

/// Clamps each value of `action` to the plant's bounds, in place. A discrete action space
/// leaves `action` untouched (its index is checked by [`clamp_discrete`]).
///
/// Non-finite values are not "fixed" here: check with [`all_finite`] first and fault.
///
/// Written with comparisons rather than `f32::clamp`, which panics when a bound is NaN or
/// `low > high`: the same results for valid bounds, no panic path in the control loop (and
/// none of the float formatting a panic message would link into a microcontroller image).
pub fn clamp_continuous(space: &ActionSpace, action: &mut [f32]) {
    if let ActionSpace::Continuous { low, high } = space {
        for ((a, &lo), &hi) in action.iter_mut().zip(low.iter()).zip(high.iter()) {
            if *a < lo {
                *a = lo;
            } else if *a > hi {
                *a = hi;
            }
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
    fn clamp_continuous_matches_f32_clamp_and_never_panics() {
        let space = |low: f32, high: f32| ActionSpace::Continuous {
            low: Vec::from_slice(&[low]).unwrap(),
            high: Vec::from_slice(&[high]).unwrap(),
        };
        for v in [-3.0f32, -2.0, -0.5, 0.0, -0.0, 1.5, 2.0, 7.0] {
            let mut a = [v];
            clamp_continuous(&space(-2.0, 2.0), &mut a);
            assert_eq!(a[0].to_bits(), v.clamp(-2.0, 2.0).to_bits(), "{v}");
        }
        // Broken bounds give some value between them or the input, not a panic.
        let mut a = [0.5f32];
        clamp_continuous(&space(1.0, -1.0), &mut a);
        clamp_continuous(&space(f32::NAN, f32::NAN), &mut a);
        assert!(a[0].is_finite());
    }

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
