//! The action rate limit: a safety setting that bounds how far a continuous action may move
//! from one control step to the next (motors, gearboxes and H-bridges dislike steps).
//!
//! It acts on what the plant receives, after the action was sampled and clamped to the
//! plant's bounds: `applied = previous + clamp(action − previous, ±max_change)`. Each
//! episode starts from the plant's safe state, whose actuators are at rest, so the first
//! `previous` is 0 (clamped into the bounds). The transition records keep the sampled
//! action (the learner needs it); the host replays this very function on them to know what
//! the plant received ([`ActionRateLimit::apply`] is the definition both use).

use heapless::Vec;
use tether_shared::ActionSpace;
use tether_shared::plant::MAX_ACTION_DIM;

use crate::safety::clamp_continuous;

/// Largest change per control step of each continuous action dimension, in action units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActionRateLimit {
    max_change: [f32; MAX_ACTION_DIM],
    /// Values given: 1 (the same limit for every dimension) up to [`MAX_ACTION_DIM`].
    dims: usize,
}

/// Why a rate limit cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitError {
    /// No value, or more than [`MAX_ACTION_DIM`].
    Count,
    /// A value is not finite and positive.
    NotPositive,
}

impl core::fmt::Display for RateLimitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RateLimitError::Count => write!(
                f,
                "an action rate limit takes 1 to {MAX_ACTION_DIM} values (one for every dimension, or one each)"
            ),
            RateLimitError::NotPositive => {
                write!(f, "an action rate limit must be finite and above 0")
            }
        }
    }
}

impl ActionRateLimit {
    /// A limit of `max_change[k]` action units per step on dimension `k`; a single value
    /// applies to every dimension.
    pub fn new(max_change: &[f32]) -> Result<Self, RateLimitError> {
        if max_change.is_empty() || max_change.len() > MAX_ACTION_DIM {
            return Err(RateLimitError::Count);
        }
        if !max_change.iter().all(|&r| r.is_finite() && r > 0.0) {
            return Err(RateLimitError::NotPositive);
        }
        let mut values = [0.0; MAX_ACTION_DIM];
        values.iter_mut().zip(max_change).for_each(|(v, &r)| *v = r);
        Ok(ActionRateLimit {
            max_change: values,
            dims: max_change.len(),
        })
    }

    /// The values as configured (the handshake reports them).
    pub fn max_change(&self) -> &[f32] {
        self.max_change.get(..self.dims).unwrap_or(&[])
    }

    /// The values as the handshake's `DeviceInfo::action_rate_limit` carries them.
    pub fn to_wire(&self) -> Vec<f32, MAX_ACTION_DIM> {
        Vec::from_slice(self.max_change()).unwrap_or_default()
    }

    /// The limit for dimension `k`.
    fn limit(&self, k: usize) -> f32 {
        let last = self.dims.saturating_sub(1);
        self.max_change.get(k.min(last)).copied().unwrap_or(0.0)
    }

    /// Moves each value of `action` at most the limit away from `previous` (the action the
    /// plant received the step before), then makes `previous` the result. Returns whether
    /// any value had to move. Written with comparisons: no panic path, NaN passes through
    /// (the runtime faults on it before).
    #[inline]
    pub fn apply(&self, previous: &mut [f32], action: &mut [f32]) -> bool {
        let mut clipped = false;
        for (k, (a, p)) in action.iter_mut().zip(previous.iter_mut()).enumerate() {
            let r = self.limit(k);
            let change = *a - *p;
            if change > r {
                *a = *p + r;
                clipped = true;
            } else if change < -r {
                *a = *p - r;
                clipped = true;
            }
            *p = *a;
        }
        clipped
    }
}

/// The action the plant holds at the start of an episode (its safe state, actuators at
/// rest): 0, clamped into the plant's bounds, in each of the first `action.len()` values.
pub fn resting_action(space: &ActionSpace, action: &mut [f32]) {
    action.fill(0.0);
    clamp_continuous(space, action);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_bounded_per_step_and_reported() {
        let limit = ActionRateLimit::new(&[0.5]).expect("valid");
        let mut previous = [0.0f32, 0.0];
        let mut step = [2.0f32, -0.2];
        assert!(limit.apply(&mut previous, &mut step));
        assert_eq!(step, [0.5, -0.2], "one value clipped, the other left");
        assert_eq!(previous, step);
        let mut next = [0.7f32, -0.6];
        assert!(!limit.apply(&mut previous, &mut next), "within the limit");
        assert_eq!(next, [0.7, -0.6]);
        let mut down = [-3.0f32, -0.6];
        assert!(limit.apply(&mut previous, &mut down));
        assert_eq!(down, [0.7 - 0.5, -0.6]);
    }

    #[test]
    fn one_limit_per_dimension_and_bad_limits_refused() {
        let limit = ActionRateLimit::new(&[0.1, 1.0]).expect("valid");
        assert_eq!(limit.max_change(), [0.1, 1.0]);
        assert_eq!(limit.to_wire().as_slice(), [0.1, 1.0]);
        let mut previous = [0.0f32; 2];
        let mut action = [1.0f32, 1.0];
        limit.apply(&mut previous, &mut action);
        assert_eq!(action, [0.1, 1.0]);
        assert_eq!(ActionRateLimit::new(&[]), Err(RateLimitError::Count));
        assert_eq!(ActionRateLimit::new(&[1.0; 5]), Err(RateLimitError::Count));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(
                ActionRateLimit::new(&[bad]),
                Err(RateLimitError::NotPositive),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_episode_starts_from_rest_inside_the_bounds() {
        let space = ActionSpace::Continuous {
            low: Vec::from_slice(&[-2.0, 1.0]).unwrap(),
            high: Vec::from_slice(&[2.0, 3.0]).unwrap(),
        };
        let mut action = [9.0f32; 2];
        resting_action(&space, &mut action);
        assert_eq!(action, [0.0, 1.0]);
    }
}
