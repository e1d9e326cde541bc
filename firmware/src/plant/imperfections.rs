//! What a real rig adds to an ideal model: actuation latency, sensor noise and an actuator
//! deadzone. All off by default; a model applies them through [`Imperfections`], with the
//! values of this episode's parameter draw (see [`super::params`]).
//!
//! - `latency_steps` (0 to [`MAX_LATENCY_STEPS`] control periods): a command reaches the
//!   actuator that many periods after the policy issued it. Until the first command of an
//!   episode arrives the actuator is idle (0 V, 0 N·m, no push); a reset or the safe state
//!   drops the commands still in flight.
//! - `angle_noise_std` (rad, or m for positions): Gaussian noise on each measured angle and
//!   position, drawn every time the plant is observed, before the observation is formed
//!   (so it passes through the `sin`/`cos` of an observation made of them).
//! - `velocity_noise_std` (rad/s or m/s): the same on each measured velocity.
//! - `deadzone` (the action's unit, continuous actions only): a command whose magnitude is
//!   below it does nothing; larger ones pass unchanged.
//!
//! Rewards and terminations stay functions of the plant itself, not of the noisy readings:
//! noise is what the policy sees, not what the task is.

use crate::sampler::Sampler;

use super::params::{ParamKind, ParamSpec};

/// Most control periods a command can be delayed: the depth of the device's command buffer.
pub const MAX_LATENCY_STEPS: usize = 3;

/// `latency_steps`: control periods between a command and its effect.
pub const LATENCY_STEPS: ParamSpec = ParamSpec {
    name: "latency_steps",
    unit: "control periods",
    default: 0.0,
    kind: ParamKind::Count {
        min: 0,
        max: MAX_LATENCY_STEPS as u32,
    },
};

/// `angle_noise_std`: standard deviation of the noise on measured angles and positions.
pub const ANGLE_NOISE_STD: ParamSpec = ParamSpec {
    name: "angle_noise_std",
    unit: "rad (m for positions)",
    default: 0.0,
    kind: ParamKind::Imperfection { max: f32::MAX },
};

/// `velocity_noise_std`: standard deviation of the noise on measured velocities.
pub const VELOCITY_NOISE_STD: ParamSpec = ParamSpec {
    name: "velocity_noise_std",
    unit: "rad/s (m/s for positions)",
    default: 0.0,
    kind: ParamKind::Imperfection { max: f32::MAX },
};

/// `deadzone` of a continuous actuator whose commands reach `max` in magnitude.
pub const fn deadzone(unit: &'static str, max: f32) -> ParamSpec {
    ParamSpec {
        name: "deadzone",
        unit,
        default: 0.0,
        kind: ParamKind::Imperfection { max },
    }
}

/// Every imperfection's name (a plant without one of them refuses it as not its own).
pub const IMPERFECTION_NAMES: [&str; 4] = [
    LATENCY_STEPS.name,
    ANGLE_NOISE_STD.name,
    VELOCITY_NOISE_STD.name,
    "deadzone",
];

/// One episode's imperfections, with the state they keep (commands in flight, the noise
/// generator).
#[derive(Clone, Debug, PartialEq)]
pub struct Imperfections {
    /// Periods of delay, at most [`MAX_LATENCY_STEPS`].
    latency: usize,
    /// Commands in flight, oldest first (`latency` of them); `None`: none issued yet.
    in_flight: [Option<f32>; MAX_LATENCY_STEPS],
    angle_noise_std: f32,
    velocity_noise_std: f32,
    deadzone: f32,
    /// The noise generator; `None` when both noises are off (nothing is drawn).
    noise: Option<Sampler>,
}

impl Default for Imperfections {
    fn default() -> Self {
        Self::none()
    }
}

impl Imperfections {
    /// No imperfection: commands act at once and whole, readings are exact.
    pub const fn none() -> Self {
        Imperfections {
            latency: 0,
            in_flight: [None; MAX_LATENCY_STEPS],
            angle_noise_std: 0.0,
            velocity_noise_std: 0.0,
            deadzone: 0.0,
            noise: None,
        }
    }

    /// An episode's imperfections: `latency_steps` (a whole number, capped at
    /// [`MAX_LATENCY_STEPS`]), the noises' standard deviations, the deadzone, and the seed of
    /// the noise (used only when a noise is on). Negative or non-finite values count as 0.
    pub fn new(
        latency_steps: f32,
        angle_noise_std: f32,
        velocity_noise_std: f32,
        deadzone: f32,
        noise_seed: u64,
    ) -> Self {
        let clean = |v: f32| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let latency = clean(latency_steps).min(MAX_LATENCY_STEPS as f32) as usize;
        let (angle_noise_std, velocity_noise_std) =
            (clean(angle_noise_std), clean(velocity_noise_std));
        let noisy = angle_noise_std > 0.0 || velocity_noise_std > 0.0;
        Imperfections {
            latency,
            in_flight: [None; MAX_LATENCY_STEPS],
            angle_noise_std,
            velocity_noise_std,
            deadzone: clean(deadzone),
            noise: noisy.then(|| Sampler::new(noise_seed)),
        }
    }

    /// The imperfections among an episode's drawn `values` (found by name in `table`, the
    /// model's parameter table they were drawn for; one the table lacks is off), the noise
    /// seeded with `noise_seed`.
    pub fn of_draw(table: &[ParamSpec], values: &[f32], noise_seed: u64) -> Self {
        let value = |name: &str| {
            table
                .iter()
                .zip(values)
                .find(|(spec, _)| spec.name == name)
                .map_or(0.0, |(_, v)| *v)
        };
        Self::new(
            value(LATENCY_STEPS.name),
            value(ANGLE_NOISE_STD.name),
            value(VELOCITY_NOISE_STD.name),
            value(IMPERFECTION_NAMES[3]),
            noise_seed,
        )
    }

    /// Control periods of delay.
    pub fn latency_steps(&self) -> usize {
        self.latency
    }

    /// `command` after the deadzone: 0 when its magnitude is below the deadzone.
    pub fn through_deadzone(&self, command: f32) -> f32 {
        if libm::fabsf(command) < self.deadzone {
            0.0
        } else {
            command
        }
    }

    /// Issues `command` and returns the one that reaches the actuator now: `command` itself
    /// without latency, else the one issued `latency` periods ago (`None` while none has
    /// arrived yet: the actuator stays idle).
    pub fn delay(&mut self, command: f32) -> Option<f32> {
        let Some(queue) = self.in_flight.get_mut(..self.latency) else {
            return Some(command);
        };
        let Some((oldest, _)) = queue.split_first() else {
            return Some(command);
        };
        let arriving = *oldest;
        queue.rotate_left(1);
        if let Some(newest) = queue.last_mut() {
            *newest = Some(command);
        }
        arriving
    }

    /// Drops the commands in flight (a reset, the safe state: the driver is switched off).
    pub fn drop_in_flight(&mut self) {
        self.in_flight = [None; MAX_LATENCY_STEPS];
    }

    /// A measured angle or position as the sensor reports it.
    pub fn angle(&mut self, measured: f32) -> f32 {
        Self::noisy(&mut self.noise, self.angle_noise_std, measured)
    }

    /// A measured velocity as the sensor reports it.
    pub fn velocity(&mut self, measured: f32) -> f32 {
        Self::noisy(&mut self.noise, self.velocity_noise_std, measured)
    }

    fn noisy(noise: &mut Option<Sampler>, std: f32, value: f32) -> f32 {
        match noise {
            Some(sampler) if std > 0.0 => value + std * sampler.standard_normal(),
            _ => value,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn without_imperfections_everything_passes_unchanged() {
        let mut none = Imperfections::none();
        for u in [-2.0, -0.01, 0.0, 0.3, 6.0] {
            assert_eq!(none.delay(u), Some(u));
            assert_eq!(none.through_deadzone(u), u);
            assert_eq!(none.angle(u).to_bits(), u.to_bits());
            assert_eq!(none.velocity(u).to_bits(), u.to_bits());
        }
        assert_eq!(Imperfections::new(0.0, 0.0, 0.0, 0.0, 1), none);
    }

    #[test]
    fn latency_delays_commands_by_whole_periods_and_starts_idle() {
        for latency in 0..=MAX_LATENCY_STEPS {
            let mut imp = Imperfections::new(latency as f32, 0.0, 0.0, 0.0, 0);
            let applied: Vec<Option<f32>> = (1..=6).map(|k| imp.delay(k as f32)).collect();
            let expected: Vec<Option<f32>> = (1..=6)
                .map(|k| (k > latency).then(|| (k - latency) as f32))
                .collect();
            assert_eq!(applied, expected, "latency {latency}");
            imp.drop_in_flight();
            if latency > 0 {
                assert_eq!(imp.delay(9.0), None, "dropped commands never arrive");
            }
        }
        // Beyond the buffer is capped (validation refuses it before it gets here).
        assert_eq!(
            Imperfections::new(7.0, 0.0, 0.0, 0.0, 0).latency_steps(),
            MAX_LATENCY_STEPS
        );
    }

    #[test]
    fn deadzone_silences_small_commands_only() {
        let imp = Imperfections::new(0.0, 0.0, 0.0, 0.3, 0);
        assert_eq!(imp.through_deadzone(0.29), 0.0);
        assert_eq!(imp.through_deadzone(-0.29), 0.0);
        assert_eq!(imp.through_deadzone(0.3), 0.3);
        assert_eq!(imp.through_deadzone(-4.0), -4.0);
    }

    #[test]
    fn noise_has_the_asked_spread_and_reproduces_from_its_seed() {
        let mut imp = Imperfections::new(0.0, 0.005, 0.5, 0.0, 42);
        let n = 20_000;
        let angles: Vec<f32> = (0..n).map(|_| imp.angle(1.0) - 1.0).collect();
        let velocities: Vec<f32> = (0..n).map(|_| imp.velocity(0.0)).collect();
        for (values, std) in [(&angles, 0.005f32), (&velocities, 0.5)] {
            let mean = values.iter().sum::<f32>() / n as f32;
            let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            assert!(mean.abs() < 0.03 * std, "mean {mean}");
            assert!(
                (libm::sqrtf(var) / std - 1.0).abs() < 0.03,
                "std {}",
                libm::sqrtf(var)
            );
        }
        let mut again = Imperfections::new(0.0, 0.005, 0.5, 0.0, 42);
        assert_eq!(again.angle(1.0) - 1.0, angles[0]);
        let mut other = Imperfections::new(0.0, 0.005, 0.5, 0.0, 43);
        assert_ne!(other.angle(1.0) - 1.0, angles[0]);
        // Only the noise that is on is drawn: positions stay exact with velocity noise alone.
        let mut velocity_only = Imperfections::new(0.0, 0.0, 0.5, 0.0, 42);
        assert_eq!(velocity_only.angle(1.0), 1.0);
        assert_ne!(velocity_only.velocity(0.0), 0.0);
    }
}
