//! The gymnasium `CartPole-v1` balancing task as a no_std plant model.
//!
//! A cart (1 kg) on a frictionless track carries a pole (0.1 kg, half-length 0.5 m) hinged on
//! top; gravity 9.8 m/s². Each step pushes the cart with ±10 N (action 1: towards +x, action
//! 0: towards −x) for `dt = 0.02 s` (50 Hz). State `[x, ẋ, θ, θ̇]`: cart position (m) and
//! velocity (m/s), pole angle from upright (radians, positive clockwise as the cart sees it,
//! i.e. towards +x) and angular velocity (rad/s). The observation is the state itself.
//!
//! Dynamics (the classic Barto, Sutton & Anderson cart-pole with a frictionless joint), with
//! `F` the push, `M` the total mass, `m` the pole mass, `l` the half-length:
//!
//! ```text
//! tmp = (F + m l θ̇² sin θ) / M
//! θ̈   = (g sin θ − cos θ · tmp) / (l (4/3 − m cos² θ / M))
//! ẍ   = tmp − m l θ̈ cos θ / M
//! ```
//!
//! integrated with explicit Euler (positions use the old velocities). The episode terminates
//! when `|x| > 2.4 m` or `|θ| > 12°` after the step, and is truncated after 500 steps. Reward:
//! `+1` for every step up to and including the terminating one; a step taken after
//! termination (which the runtime never does — it resets) earns `0` and stays terminated.
//! Initial state: each component uniform in `[-0.05, 0.05)`, drawn from the reset seed.
//!
//! Dynamics, observation, reward and termination agree with gymnasium 1.4 (see
//! `tests/plant_parity.rs`); initial-state draws use our own generator.
//!
//! Run-time parameters ([`PARAMS`]): `cart_mass`, `pole_mass`, `pole_half_length` (gym's
//! `length`), `force` and `gravity` (defaults gymnasium's constants below) and the
//! imperfections `latency_steps` (until the first push arrives the cart is not pushed),
//! `angle_noise_std` (on x in m and θ in rad) and `velocity_noise_std` (on ẋ and θ̇). No
//! `deadzone`: the action is a choice, not a magnitude.

use tether_shared::message::PlantParams;
use tether_shared::{ActionSpace, PlantDescription};

use super::common::{describe, write_obs};
use super::imperfections::{ANGLE_NOISE_STD, LATENCY_STEPS, VELOCITY_NOISE_STD};
use super::params::{ParamKind, ParamRefusal, ParamSpec};
use super::variation::Variation;
use super::{Action, Plant, StepOutcome};
use tether_shared::seeds::SplitMix64;

/// Gravity, m/s².
pub const GRAVITY: f32 = 9.8;
/// Cart mass, kg.
pub const CART_MASS: f32 = 1.0;
/// Pole mass, kg.
pub const POLE_MASS: f32 = 0.1;
/// Half the pole's length (hinge to centre of mass), m.
pub const POLE_HALF_LENGTH: f32 = 0.5;
/// Magnitude of the push, N.
pub const FORCE: f32 = 10.0;
/// Control period, seconds.
pub const DT: f32 = 0.02;
/// The pole has fallen beyond this angle from upright, radians (12°).
pub const THETA_LIMIT: f32 = 12.0 * 2.0 * core::f32::consts::PI / 360.0;
/// The cart has left the track beyond this position, m.
pub const X_LIMIT: f32 = 2.4;
/// Steps per episode (time limit, 10 s).
pub const EPISODE_STEPS: u32 = 500;
/// Observation size: `[x, ẋ, θ, θ̇]`.
pub const OBS_DIM: usize = 4;

/// The cart-pole's run-time parameters, in the order of its draws: physical constants,
/// then imperfections (see [`super::imperfections`]).
pub const PARAMS: [ParamSpec; 8] = [
    ParamSpec {
        name: "cart_mass",
        unit: "kg",
        default: CART_MASS,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "pole_mass",
        unit: "kg",
        default: POLE_MASS,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "pole_half_length",
        unit: "m",
        default: POLE_HALF_LENGTH,
        kind: ParamKind::Positive,
    },
    ParamSpec {
        name: "force",
        unit: "N",
        default: FORCE,
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
];

/// The cart-pole's physical constants for one episode (SI units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CartPolePhysics {
    /// Cart mass, kg.
    pub cart_mass: f32,
    /// Pole mass, kg.
    pub pole_mass: f32,
    /// Hinge to the pole's centre of mass, m.
    pub pole_half_length: f32,
    /// Magnitude of a push, N.
    pub force: f32,
    /// Gravity, m/s².
    pub gravity: f32,
}

impl CartPolePhysics {
    /// Gymnasium's constants.
    pub const NOMINAL: CartPolePhysics = CartPolePhysics {
        cart_mass: CART_MASS,
        pole_mass: POLE_MASS,
        pole_half_length: POLE_HALF_LENGTH,
        force: FORCE,
        gravity: GRAVITY,
    };
}

/// Gymnasium `CartPole-v1`: keep a pole upright by pushing its cart left or right.
#[derive(Clone, Debug, PartialEq)]
pub struct CartPole {
    /// `[x, ẋ, θ, θ̇]` in m, m/s, rad, rad/s.
    state: [f32; 4],
    /// Whether a step has already reported termination since the last reset.
    terminated: bool,
    /// This episode's physical constants.
    physics: CartPolePhysics,
    /// The host's settings of [`PARAMS`] and this episode's imperfections.
    variation: Variation<8>,
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl CartPole {
    /// A cart-pole in the initial state drawn from seed 0.
    pub fn new() -> Self {
        let mut c = Self::with_state([0.0; 4]);
        c.reset(0);
        c
    }

    /// A cart-pole in exactly `state = [x, ẋ, θ, θ̇]` (m, m/s, rad, rad/s), not yet
    /// terminated.
    pub const fn with_state(state: [f32; 4]) -> Self {
        Self {
            state,
            terminated: false,
            physics: CartPolePhysics::NOMINAL,
            variation: Variation::new(&PARAMS),
        }
    }

    /// This episode's physical constants.
    pub fn physics(&self) -> CartPolePhysics {
        self.physics
    }

    /// See [`super::AnyPlant::fix_params`].
    pub(crate) fn lock_params(&mut self) {
        self.variation.lock();
    }

    /// Sets the state exactly (`[x, ẋ, θ, θ̇]`) and clears the terminated flag.
    pub fn set_state(&mut self, state: [f32; 4]) {
        self.state = state;
        self.terminated = false;
    }

    /// The current state `[x, ẋ, θ, θ̇]`: m, m/s, rad, rad/s.
    pub fn state(&self) -> [f32; 4] {
        self.state
    }

    /// The push index an action selects: `Discrete(0)` pushes towards −x, any other index
    /// towards +x; a (mismatched) continuous action pushes towards +x when its first value is
    /// positive, otherwise towards −x.
    pub fn push_index(action: Action<'_>) -> usize {
        match action {
            Action::Discrete(i) => usize::from(i != 0),
            Action::Continuous(v) => match v.first() {
                Some(&x) if x > 0.0 => 1,
                _ => 0,
            },
        }
    }

    fn out_of_bounds(&self) -> bool {
        let [x, _, theta, _] = self.state;
        // Written as "not inside" so that a NaN state counts as terminated.
        !((-X_LIMIT..=X_LIMIT).contains(&x) && (-THETA_LIMIT..=THETA_LIMIT).contains(&theta))
    }
}

impl Plant for CartPole {
    fn description(&self) -> PlantDescription {
        describe(
            "cartpole",
            OBS_DIM as u8,
            ActionSpace::Discrete { n: 2 },
            1.0 / DT,
            EPISODE_STEPS,
        )
    }

    fn reset(&mut self, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        for s in self.state.iter_mut() {
            *s = rng.uniform(-0.05, 0.05);
        }
        self.terminated = false;
        self.variation.imperfections.drop_in_flight();
    }

    fn observe(&mut self, obs: &mut [f32]) {
        let [x, x_dot, theta, theta_dot] = self.state;
        let noisy = &mut self.variation.imperfections;
        let measured = [
            noisy.angle(x),
            noisy.velocity(x_dot),
            noisy.angle(theta),
            noisy.velocity(theta_dot),
        ];
        write_obs(obs, &measured);
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        let CartPolePhysics {
            cart_mass,
            pole_mass,
            pole_half_length,
            force,
            gravity,
        } = self.physics;
        let push = self
            .variation
            .imperfections
            .delay(Self::push_index(action) as f32);
        let force = match push {
            Some(1.0) => force,
            Some(_) => -force,
            None => 0.0,
        };
        let [x, x_dot, theta, theta_dot] = self.state;
        let total_mass = cart_mass + pole_mass;
        let pole_ml = pole_mass * pole_half_length;
        let (sin, cos) = crate::trig::sin_cos(theta);

        let tmp = (force + pole_ml * theta_dot * theta_dot * sin) / total_mass;
        let theta_acc = (gravity * sin - cos * tmp)
            / (pole_half_length * (4.0 / 3.0 - pole_mass * cos * cos / total_mass));
        let x_acc = tmp - pole_ml * theta_acc * cos / total_mass;

        self.state = [
            x + DT * x_dot,
            x_dot + DT * x_acc,
            theta + DT * theta_dot,
            theta_dot + DT * theta_acc,
        ];

        let terminated = self.out_of_bounds();
        let reward = if self.terminated { 0.0 } else { 1.0 };
        self.terminated |= terminated;
        StepOutcome { reward, terminated }
    }

    fn safe_state(&mut self) {
        // A push lasts one step only; nothing stays energised between steps, and pushes in
        // flight are dropped.
        self.variation.imperfections.drop_in_flight();
    }

    fn set_params(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        self.variation.set(params)
    }

    fn vary(&mut self, seed: u64) {
        let [cart_mass, pole_mass, pole_half_length, force, gravity, ..] =
            self.variation.draw(seed);
        self.physics = CartPolePhysics {
            cart_mass,
            pole_mass,
            pole_half_length,
            force,
            gravity,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::params::{TestSetting, plant_params};
    use tether_shared::message::RefusalReason;

    #[test]
    fn description_is_valid() {
        let d = CartPole::new().description();
        assert!(d.validate().is_ok());
        assert_eq!(d.name.as_str(), "cartpole");
        assert_eq!(d.action, ActionSpace::Discrete { n: 2 });
        assert_eq!(d.control_rate_hz, 50.0);
    }

    #[test]
    fn reset_is_small_and_deterministic() {
        let mut c = CartPole::new();
        c.reset(42);
        let s = c.state();
        assert!(s.iter().all(|v| (-0.05..0.05).contains(v)));
        c.reset(42);
        assert_eq!(c.state(), s);
    }

    #[test]
    fn pushing_one_way_ends_the_episode_and_later_steps_earn_nothing() {
        let mut c = CartPole::with_state([0.0; 4]);
        let mut steps = 0;
        loop {
            let out = c.actuate(Action::Discrete(1));
            steps += 1;
            assert_eq!(out.reward, 1.0);
            if out.terminated {
                break;
            }
            assert!(steps < 500);
        }
        let after = c.actuate(Action::Discrete(0));
        assert!(after.terminated);
        assert_eq!(after.reward, 0.0);
        c.reset(0);
        assert_eq!(c.actuate(Action::Discrete(0)).reward, 1.0);
    }

    fn configured(settings: &[TestSetting<'_>]) -> CartPole {
        let mut c = CartPole::with_state([0.0; 4]);
        c.set_params(&plant_params(settings))
            .expect("valid settings");
        c.vary(0);
        c
    }

    #[test]
    fn parameters_change_the_dynamics() {
        // From rest, a push accelerates the cart by about F / (M + m); the pole tips back.
        let push = |c: &mut CartPole| {
            c.actuate(Action::Discrete(1));
            c.state()
        };
        let nominal = push(&mut CartPole::with_state([0.0; 4]));
        let heavy = push(&mut configured(&[("cart_mass", Some(2.0), None)]));
        let strong = push(&mut configured(&[("force", Some(20.0), None)]));
        assert!(heavy[1] < 0.6 * nominal[1], "{heavy:?} vs {nominal:?}");
        assert!((strong[1] / nominal[1] - 2.0).abs() < 1e-5);
        // A longer pole falls more slowly.
        let fall = |c: &mut CartPole| {
            c.set_state([0.0, 0.0, 0.1, 0.0]);
            c.actuate(Action::Discrete(0));
            c.actuate(Action::Discrete(1));
            c.state()[3]
        };
        let short = fall(&mut CartPole::with_state([0.0; 4]));
        let long = fall(&mut configured(&[("pole_half_length", Some(1.0), None)]));
        assert!(long < 0.6 * short, "{long} vs {short}");
    }

    #[test]
    fn a_delayed_push_leaves_the_cart_alone_until_it_arrives() {
        let mut late = configured(&[("latency_steps", Some(1.0), None)]);
        late.actuate(Action::Discrete(1));
        assert_eq!(late.state(), [0.0; 4], "no push has arrived yet");
        late.actuate(Action::Discrete(0));
        assert!(late.state()[1] > 0.0, "the first push (+x) arrives now");
        late.actuate(Action::Discrete(1));
        late.reset(3);
        late.actuate(Action::Discrete(1));
        let mut fresh = configured(&[("latency_steps", Some(1.0), None)]);
        fresh.reset(3);
        fresh.actuate(Action::Discrete(1));
        assert_eq!(
            late.state(),
            fresh.state(),
            "a reset drops pushes in flight"
        );
    }

    #[test]
    fn noise_reaches_positions_and_velocities_but_no_deadzone_exists() {
        let mut noisy = configured(&[
            ("angle_noise_std", Some(0.01), None),
            ("velocity_noise_std", Some(0.1), None),
        ]);
        noisy.set_state([0.5, 0.2, 0.05, -0.1]);
        let mut seen = [0.0; 4];
        noisy.observe(&mut seen);
        assert!(
            seen.iter().zip(noisy.state()).all(|(a, b)| *a != b),
            "{seen:?}"
        );
        let err = CartPole::new()
            .set_params(&plant_params(&[("deadzone", Some(0.1), None)]))
            .expect_err("a discrete action has no deadzone");
        assert_eq!(err.reason, RefusalReason::UnknownParam);
    }

    #[test]
    fn nan_state_terminates() {
        let mut c = CartPole::with_state([f32::NAN, 0.0, 0.0, 0.0]);
        assert!(c.actuate(Action::Discrete(0)).terminated);
    }
}
