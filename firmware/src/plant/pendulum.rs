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
//!
//! Run-time parameters ([`PARAMS`]): `mass`, `length`, `max_torque` and `gravity`
//! (defaults gymnasium's constants below) and the imperfections `latency_steps`,
//! `angle_noise_std` (on θ), `velocity_noise_std` (on θ̇) and `deadzone` (N·m). The action
//! bounds the plant describes stay ±[`MAX_TORQUE`]: a `max_torque` below it is a weaker
//! motor that saturates earlier.

use core::f32::consts::PI;

use tether_shared::PlantDescription;
use tether_shared::message::PlantParams;

use super::common::{describe, scalar_command, symmetric_1d, wrap_angle, write_obs};
use super::imperfections::{ANGLE_NOISE_STD, LATENCY_STEPS, VELOCITY_NOISE_STD, deadzone};
use super::params::{ParamKind, ParamRefusal, ParamSpec};
use super::variation::Variation;
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

/// The pendulum's run-time parameters, in the order of its draws: physical constants, then
/// imperfections (see [`super::imperfections`]).
pub const PARAMS: [ParamSpec; 8] = [
    ParamSpec {
        name: "mass",
        unit: "kg",
        default: MASS,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "length",
        unit: "m",
        default: LENGTH,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "max_torque",
        unit: "N·m",
        default: MAX_TORQUE,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "gravity",
        unit: "m/s²",
        default: GRAVITY,
        kind: ParamKind::Positive,
    },
    LATENCY_STEPS,
    ANGLE_NOISE_STD,
    VELOCITY_NOISE_STD,
    deadzone("N·m", MAX_TORQUE),
];

/// The pendulum's physical constants for one episode (SI units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PendulumPhysics {
    /// Mass, kg.
    pub mass: f32,
    /// Length, m.
    pub length: f32,
    /// Largest torque the motor applies, N·m.
    pub max_torque: f32,
    /// Gravity, m/s².
    pub gravity: f32,
}

impl PendulumPhysics {
    /// Gymnasium's constants.
    pub const NOMINAL: PendulumPhysics = PendulumPhysics {
        mass: MASS,
        length: LENGTH,
        max_torque: MAX_TORQUE,
        gravity: GRAVITY,
    };
}

/// Gymnasium `Pendulum-v1`: swing a torque-limited pendulum up and hold it there.
#[derive(Clone, Debug, PartialEq)]
pub struct Pendulum {
    /// Angle from upright, radians (counter-clockwise positive, unwrapped).
    theta: f32,
    /// Angular velocity, rad/s.
    theta_dot: f32,
    /// Last torque applied, N·m (0 after [`Plant::safe_state`]).
    torque: f32,
    /// This episode's physical constants.
    physics: PendulumPhysics,
    /// The host's settings of [`PARAMS`] and this episode's imperfections.
    variation: Variation<8>,
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
            physics: PendulumPhysics::NOMINAL,
            variation: Variation::new(&PARAMS),
        }
    }

    /// This episode's physical constants.
    pub fn physics(&self) -> PendulumPhysics {
        self.physics
    }

    /// See [`super::AnyPlant::fix_params`].
    pub(crate) fn lock_params(&mut self) {
        self.variation.lock();
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
        self.variation.imperfections.drop_in_flight();
    }

    fn observe(&mut self, obs: &mut [f32]) {
        let theta = self.variation.imperfections.angle(self.theta);
        let theta_dot = self.variation.imperfections.velocity(self.theta_dot);
        write_obs(
            obs,
            &[crate::trig::cos(theta), crate::trig::sin(theta), theta_dot],
        );
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        let PendulumPhysics {
            mass,
            length,
            max_torque,
            gravity,
        } = self.physics;
        let imperfections = &mut self.variation.imperfections;
        let commanded = imperfections.through_deadzone(scalar_command(action, max_torque));
        let u = imperfections.delay(commanded).unwrap_or(0.0);
        let th = self.theta;
        let thdot = self.theta_dot;
        let angle = wrap_angle(th);
        let cost = angle * angle + 0.1 * thdot * thdot + 0.001 * u * u;

        let gravity_gain = 3.0 * gravity / (2.0 * length);
        let torque_gain = 3.0 / (mass * length * length);
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
        // The model holds no command between steps; forget the last one and any in flight.
        self.torque = 0.0;
        self.variation.imperfections.drop_in_flight();
    }

    fn set_params(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        self.variation.set(params)
    }

    fn vary(&mut self, seed: u64) {
        let [mass, length, max_torque, gravity, ..] = self.variation.draw(seed);
        self.physics = PendulumPhysics {
            mass,
            length,
            max_torque,
            gravity,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::params::{TestSetting, plant_params};

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

    /// A pendulum with `settings` drawn for an episode (seed 0), at rest upright.
    fn configured(settings: &[TestSetting<'_>]) -> Pendulum {
        let mut p = Pendulum::with_state(0.0, 0.0);
        p.set_params(&plant_params(settings))
            .expect("valid settings");
        p.vary(0);
        p
    }

    fn torques(p: &mut Pendulum, commands: &[f32]) -> [f32; 5] {
        let mut out = [0.0; 5];
        for (slot, &u) in out.iter_mut().zip(commands) {
            p.actuate(Action::Continuous(&[u]));
            *slot = p.torque();
        }
        out
    }

    #[test]
    fn parameters_change_the_dynamics() {
        // Upright at rest gravity does nothing: a unit torque turns a 2 kg pendulum half as
        // fast as a 1 kg one, a 2 m one a quarter as fast.
        let mut nominal = Pendulum::with_state(0.0, 0.0);
        nominal.actuate(Action::Continuous(&[1.0]));
        let mut heavy = configured(&[("mass", Some(2.0), None)]);
        heavy.actuate(Action::Continuous(&[1.0]));
        let mut long = configured(&[("length", Some(2.0), None)]);
        long.actuate(Action::Continuous(&[1.0]));
        assert_eq!(nominal.state().1, 0.15);
        assert_eq!(heavy.state().1, 0.075);
        assert_eq!(long.state().1, 0.0375);
        // Gravity pulls a tilted pendulum over faster when stronger.
        let fall = |g: f32| {
            let mut p = configured(&[("gravity", Some(g), None)]);
            p.set_state(0.5, 0.0);
            p.actuate(Action::Continuous(&[0.0]));
            p.state().1
        };
        assert!((fall(20.0) / fall(10.0) - 2.0).abs() < 1e-5);
        // A weaker motor saturates earlier.
        let mut weak = configured(&[("max_torque", Some(1.0), None)]);
        assert_eq!(torques(&mut weak, &[2.0, -3.0]), [1.0, -1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn latency_delays_the_torque_and_deadzone_swallows_small_ones() {
        let mut late = configured(&[("latency_steps", Some(2.0), None)]);
        assert_eq!(
            torques(&mut late, &[0.5, 1.0, 1.5, 2.0, -1.0]),
            [0.0, 0.0, 0.5, 1.0, 1.5]
        );
        let mut dead = configured(&[("deadzone", Some(0.5), None)]);
        assert_eq!(
            torques(&mut dead, &[0.4, -0.49, 0.5, -1.0, 0.1]),
            [0.0, 0.0, 0.5, -1.0, 0.0]
        );
    }

    #[test]
    fn sensor_noise_changes_what_is_seen_not_what_happens() {
        let mut noisy = configured(&[
            ("angle_noise_std", Some(0.05), None),
            ("velocity_noise_std", Some(0.5), None),
        ]);
        let mut clean = Pendulum::with_state(0.0, 0.0);
        for p in [&mut noisy, &mut clean] {
            p.set_state(1.0, 0.5);
        }
        let (mut seen, mut exact) = ([0.0; 3], [0.0; 3]);
        for _ in 0..20 {
            noisy.observe(&mut seen);
            clean.observe(&mut exact);
            assert!(seen.iter().zip(&exact).all(|(a, b)| a != b), "{seen:?}");
            let a = noisy.actuate(Action::Continuous(&[0.3]));
            let b = clean.actuate(Action::Continuous(&[0.3]));
            assert_eq!(a, b, "the reward is the plant's, not the sensor's");
            assert_eq!(noisy.state(), clean.state());
        }
    }

    #[test]
    fn each_episode_draws_its_own_reproducible_values() {
        let mut p = Pendulum::new();
        p.set_params(&plant_params(&[("mass", None, Some((0.5, 1.5)))]))
            .expect("valid");
        let mut masses = [0.0f32; 8];
        for (seed, mass) in masses.iter_mut().enumerate() {
            p.vary(seed as u64);
            *mass = p.physics().mass;
            assert!((0.5..=1.5).contains(mass));
        }
        assert!(masses.windows(2).all(|w| w[0] != w[1]), "{masses:?}");
        p.vary(3);
        assert_eq!(p.physics().mass, masses[3]);
        // An empty message puts everything back to the nominal model.
        p.set_params(&PlantParams::default()).expect("empty");
        p.vary(3);
        assert_eq!(p.physics(), PendulumPhysics::NOMINAL);
    }

    #[test]
    fn short_observation_buffer_does_not_panic() {
        let mut p = Pendulum::with_state(0.5, 1.0);
        let mut obs = [0.0f32; 2];
        p.observe(&mut obs);
        assert!((obs[0] - libm::cosf(0.5)).abs() < 1e-7);
    }
}
