//! Small helpers shared by the plant models (no heap, no panics).

use core::f32::consts::PI;

use heapless::{String, Vec};
use tether_shared::{ActionSpace, PlantDescription};

use super::Action;

/// 2π in f32.
pub(crate) const TAU: f32 = 2.0 * PI;

/// Wraps an angle (radians) into `[-π, π)`: `((x + π) mod 2π) - π` with a floored modulo.
pub(crate) fn wrap_angle(x: f32) -> f32 {
    let y = x + PI;
    y - TAU * libm::floorf(y / TAU) - PI
}

/// The first value of a continuous action clamped to `[-limit, limit]` (`limit ≥ 0`).
///
/// Anything that is not a usable command — a discrete action sent to a continuous plant, an
/// empty slice, NaN or ±∞ — becomes `0.0`, the harmless command.
pub(crate) fn scalar_command(action: Action<'_>, limit: f32) -> f32 {
    match action {
        Action::Continuous(values) => match values.first() {
            Some(&v) if v.is_finite() => within(v, limit),
            _ => 0.0,
        },
        Action::Discrete(_) => 0.0,
    }
}

/// `v` limited to `[-limit, limit]`, by comparisons: `f32::clamp` with a run-time limit
/// keeps a panic path whose message formats floats (20-odd KiB of a microcontroller image).
pub(crate) fn within(v: f32, limit: f32) -> f32 {
    if v < -limit {
        -limit
    } else if v > limit {
        limit
    } else {
        v
    }
}

/// A one-dimensional continuous action space `[-limit, limit]`.
pub(crate) fn symmetric_1d(limit: f32) -> ActionSpace {
    let mut low = Vec::new();
    let mut high = Vec::new();
    // Capacity is MAX_ACTION_DIM >= 1: these pushes cannot fail.
    let _ = low.push(-limit);
    let _ = high.push(limit);
    ActionSpace::Continuous { low, high }
}

/// Builds a description; `name` must fit in `MAX_PLANT_NAME` bytes (all ours do; a longer
/// one would be truncated to empty rather than panic).
pub(crate) fn describe(
    name: &str,
    obs_dim: u8,
    action: ActionSpace,
    control_rate_hz: f32,
    episode_steps: u32,
) -> PlantDescription {
    let mut n = String::new();
    let _ = n.push_str(name);
    PlantDescription {
        name: n,
        obs_dim,
        action,
        control_rate_hz,
        episode_steps,
    }
}

/// Copies `values` into the front of `obs`; a shorter `obs` receives a prefix (no panic).
pub(crate) fn write_obs(obs: &mut [f32], values: &[f32]) {
    for (o, v) in obs.iter_mut().zip(values) {
        *o = *v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_angle_matches_the_floored_definition() {
        for &(x, want) in &[
            (0.0f32, 0.0f32),
            (PI - 0.1, PI - 0.1),
            (PI + 0.1, -PI + 0.1),
            (-PI - 0.1, PI - 0.1),
            (7.0, 7.0 - TAU),
            (-20.0, -20.0 + 3.0 * TAU),
        ] {
            assert!(
                (wrap_angle(x) - want).abs() < 1e-5,
                "{x} -> {}",
                wrap_angle(x)
            );
        }
    }

    #[test]
    fn bad_commands_become_zero() {
        assert_eq!(scalar_command(Action::Continuous(&[]), 2.0), 0.0);
        assert_eq!(scalar_command(Action::Continuous(&[f32::NAN]), 2.0), 0.0);
        assert_eq!(
            scalar_command(Action::Continuous(&[f32::INFINITY]), 2.0),
            0.0
        );
        assert_eq!(scalar_command(Action::Discrete(1), 2.0), 0.0);
        assert_eq!(scalar_command(Action::Continuous(&[3.0]), 2.0), 2.0);
        assert_eq!(scalar_command(Action::Continuous(&[-3.0]), 2.0), -2.0);
    }
}
