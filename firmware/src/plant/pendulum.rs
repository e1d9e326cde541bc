//! The gymnasium `Pendulum-v1` swing-up task as a no_std plant model.
//!
//! A rigid pendulum (mass 1 kg, length 1 m, gravity 10 m/s², its mass treated as a uniform
//! rod so the angular acceleration per unit torque is `3 / (m l²)`) on a motor that applies a
//! torque `u` in N·m, clamped to `±2`. The angle θ (radians) is measured from upright,
//! counter-clockwise positive. One control step lasts `dt = 0.05 s` (20 Hz); episodes are
//! truncated after 200 steps and never terminate.
//!
//! One step, with `θ`, `θ̇` the state before it:
//!
//! ```text
//! cost  = wrap(θ)² + 0.1 θ̇² + 0.001 u²         wrap: into [-π, π)
//! θ̇'    = clamp(θ̇ + (3g/(2l) sin θ + 3/(m l²) u) dt, -8, 8)     rad/s
//! θ'    = θ + θ̇' dt                              (not wrapped: the state keeps winding)
//! reward = -cost                                 (in [-16.27, 0])
//! ```
//!
//! Observation: `[cos θ, sin θ, θ̇]`. Initial state: θ uniform in `[-π, π)`, θ̇ uniform in
//! `[-1, 1)` rad/s, drawn from the reset seed. The dynamics, reward and observation agree
//! with gymnasium 1.4 within 1e-4 (see `tests/plant_parity.rs`); the initial-state draws
//! use our own generator, so seeds do not match gymnasium's.

use core::f32::consts::PI;

use tether_shared::PlantDescription;

use super::common::{describe, scalar_command, symmetric_1d, wrap_angle, write_obs};
use super::{Action, Plant, StepOutcome};
use tether_shared::seeds::SplitMix64;

/// Largest torque magnitude the motor applies, N·m.
pub const MAX_TORQUE: f32 = 2.0;
/// Largest angular speed magnitude, rad/s (the speed is clipped after each step).
pub const MAX_SPEED: f32 = 8.0;
/// Control period, seconds.
pub const DT: f32 = 0.05;
/// Gravity, m/s².
pub const GRAVITY: f32 = 10.0;
/// Pendulum mass, kg.
pub const MASS: f32 = 1.0;
/// Pendulum length, m.
pub const LENGTH: f32 = 1.0;
/// Steps per episode (time limit, 10 s).
pub const EPISODE_STEPS: u32 = 200;
/// Observation size: `[cos θ, sin θ, θ̇]`.
pub const OBS_DIM: usize = 3;

/// Gymnasium `Pendulum-v1`: swing a torque-limited pendulum up and hold it there.
#[derive(Clone, Debug, PartialEq)]
pub struct Pendulum {
    /// Angle from upright, radians (counter-clockwise positive, unwrapped).
    theta: f32,
    /// Angular velocity, rad/s.
    theta_dot: f32,
    /// Last torque applied, N·m (0 after [`Plant::safe_state`]).
    torque: f32,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self::new()
    }
}

impl Pendulum {
    /// A pendulum in the initial state drawn from seed 0.
    pub fn new() -> Self {
        let mut p = Self::with_state(0.0, 0.0);
        p.reset(0);
        p
    }

    /// A pendulum at angle `theta` (radians from upright) and angular velocity `theta_dot`
    /// (rad/s), exactly as given (no wrapping, no clipping).
    pub const fn with_state(theta: f32, theta_dot: f32) -> Self {
        Self {
            theta,
            theta_dot,
            torque: 0.0,
        }
    }

    /// Sets the state exactly: `theta` in radians from upright, `theta_dot` in rad/s.
    pub fn set_state(&mut self, theta: f32, theta_dot: f32) {
        self.theta = theta;
        self.theta_dot = theta_dot;
    }

    /// The current state `(θ, θ̇)`: radians from upright (unwrapped), rad/s.
    pub fn state(&self) -> (f32, f32) {
        (self.theta, self.theta_dot)
    }

    /// The torque applied during the last step, N·m.
    pub fn torque(&self) -> f32 {
        self.torque
    }
}

impl Plant for Pendulum {
    fn description(&self) -> PlantDescription {
        describe(
            "pendulum",
            OBS_DIM as u8,
            symmetric_1d(MAX_TORQUE),
            1.0 / DT,
            EPISODE_STEPS,
        )
    }

    fn reset(&mut self, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        self.theta = rng.uniform(-PI, PI);
        self.theta_dot = rng.uniform(-1.0, 1.0);
        self.torque = 0.0;
    }

    fn observe(&mut self, obs: &mut [f32]) {
        write_obs(
            obs,
            &[
                crate::trig::cos(self.theta),
                crate::trig::sin(self.theta),
                self.theta_dot,
            ],
        );
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        let u = scalar_command(action, MAX_TORQUE);
        let th = self.theta;
        let thdot = self.theta_dot;
        let angle = wrap_angle(th);
        let cost = angle * angle + 0.1 * thdot * thdot + 0.001 * u * u;

        let gravity_gain = 3.0 * GRAVITY / (2.0 * LENGTH);
        let torque_gain = 3.0 / (MASS * LENGTH * LENGTH);
        let accel = gravity_gain * crate::trig::sin(th) + torque_gain * u;
        let new_thdot = (thdot + accel * DT).clamp(-MAX_SPEED, MAX_SPEED);
        self.theta = th + new_thdot * DT;
        self.theta_dot = new_thdot;
        self.torque = u;
        StepOutcome {
            reward: -cost,
            terminated: false,
        }
    }

    fn safe_state(&mut self) {
        // The model holds no command between steps; forget the last one.
        self.torque = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_is_valid() {
        let d = Pendulum::new().description();
        assert!(d.validate().is_ok());
        assert_eq!(d.name.as_str(), "pendulum");
        assert_eq!(d.obs_dim, 3);
        assert_eq!(d.control_rate_hz, 20.0);
        assert_eq!(d.episode_steps, 200);
    }

    #[test]
    fn reset_is_deterministic_and_in_range() {
        let mut a = Pendulum::new();
        let mut b = Pendulum::new();
        for seed in 0..200 {
            a.reset(seed);
            b.reset(seed);
            assert_eq!(a.state(), b.state());
            let (th, thd) = a.state();
            assert!((-PI..PI).contains(&th) && (-1.0..1.0).contains(&thd));
        }
        a.reset(1);
        b.reset(2);
        assert_ne!(a.state(), b.state());
    }

    #[test]
    fn upright_at_rest_earns_zero_cost_and_stays() {
        let mut p = Pendulum::with_state(0.0, 0.0);
        let out = p.actuate(Action::Continuous(&[0.0]));
        assert_eq!(out.reward, 0.0);
        assert_eq!(p.state(), (0.0, 0.0));
    }

    #[test]
    fn short_observation_buffer_does_not_panic() {
        let mut p = Pendulum::with_state(0.5, 1.0);
        let mut obs = [0.0f32; 2];
        p.observe(&mut obs);
        assert!((obs[0] - libm::cosf(0.5)).abs() < 1e-7);
    }
}
