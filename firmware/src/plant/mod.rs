//! The `Plant` seam: the physical system a device controls, or a model of it.
//!
//! A real board implements [`Plant`] over its sensors and motor driver; the models in this
//! module implement it in software (libm, no heap) so they run in CI, on the host as
//! simulated devices, and on a real MCU as "virtual plants" for bring-up.

use tether_shared::PlantDescription;
use tether_shared::message::PlantParams;

pub mod cartpole;
mod common;
pub mod imperfections;
pub mod params;
pub mod pendulum;
pub mod qube;
pub mod rotary_hal;
pub mod variation;

use params::{ParamRefusal, ParamSpec};

pub use cartpole::CartPole;
pub use pendulum::Pendulum;
pub use qube::Qube;

/// An action as the plant receives it, already clamped to its bounds by the runtime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action<'a> {
    /// One value per dimension, in the plant's units (see its [`PlantDescription`]).
    Continuous(&'a [f32]),
    /// The index of one of the plant's choices, `0..n`.
    Discrete(usize),
}

/// What one control step did to the plant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Reward for this step.
    pub reward: f32,
    /// Whether the plant reached a terminal state (fell over, left its safe range): the
    /// episode ends with no bootstrap.
    pub terminated: bool,
}

/// A controllable system, stepped at its control rate.
///
/// Contract:
/// - [`Plant::observe`] writes exactly `description().obs_dim` values;
/// - [`Plant::actuate`] applies the action and holds it for one control period
///   (`1 / control_rate_hz` seconds): a model integrates its dynamics over that period, a
///   real plant writes the command and returns at once (the runtime keeps the rate);
/// - [`Plant::safe_state`] must always succeed and leave the actuators harmless (zero
///   torque, zero volts); the runtime calls it on faults, on stop and when the watchdog fires;
/// - nothing here may panic or allocate.
pub trait Plant {
    /// Static description, sent to the host in the handshake.
    fn description(&self) -> PlantDescription;

    /// Brings the plant to the start of an episode. A model draws its initial state from
    /// `seed`; a real plant may wait until it is at rest.
    fn reset(&mut self, seed: u64);

    /// Writes the current observation into `obs` (`obs_dim` values).
    fn observe(&mut self, obs: &mut [f32]);

    /// Applies `action` for one control period and reports the reward and termination.
    fn actuate(&mut self, action: Action<'_>) -> StepOutcome;

    /// Puts the actuators in their harmless state.
    fn safe_state(&mut self);

    /// Whether the plant is ready to start the episode [`Plant::reset`] began. A model is at
    /// once (the default); a real plant may still be centring its arm or waiting for its
    /// pendulum to hang still. The runtime calls it at every poll until it stops answering
    /// [`Settling::Busy`], serving the link meanwhile, and polls again after at most
    /// [`Plant::settle_tick_us`]. It must return quickly (no waiting inside).
    fn settle(&mut self) -> Settling {
        Settling::Ready
    }

    /// Microseconds between two [`Plant::settle`] calls while it answers
    /// [`Settling::Busy`].
    fn settle_tick_us(&self) -> u64 {
        1_000
    }

    /// The fault that stopped the plant, if any: a sensor or actuator that failed, a reset
    /// that timed out. A faulted plant stays in its safe state; the runtime ends the episode
    /// as a fault (the host discards it) and goes to its safe stop. Models never fault.
    fn fault(&self) -> Option<PlantFault> {
        None
    }

    /// Replaces a model's run-time parameters and their per-episode ranges (see
    /// [`params`]); they apply from the next [`Plant::vary`]. All or nothing: a refused
    /// message changes nothing. A physical plant's physics is its own: the default refuses
    /// with [`ParamRefusal::FIXED_PHYSICS`].
    fn set_params(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        let _ = params;
        Err(ParamRefusal::FIXED_PHYSICS)
    }

    /// Draws a model's parameter values for the next episode from their ranges, and seeds
    /// its sensor noise, from `seed`. The runtime calls it before every [`Plant::reset`];
    /// a physical plant has nothing to draw (the default does nothing).
    fn vary(&mut self, seed: u64) {
        let _ = seed;
    }
}

/// Where a plant's reset stands (see [`Plant::settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settling {
    /// At the episode's start state: the first step may run.
    Ready,
    /// Still getting there: call again later.
    Busy,
    /// Cannot get there: see [`Plant::fault`].
    Failed,
}

/// Why a real plant stopped itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlantFault {
    /// The arm's angle sensor did not answer.
    ArmSensor,
    /// The pendulum's angle sensor did not answer.
    PendulumSensor,
    /// The limit-switch input could not be read.
    LimitSwitch,
    /// The motor driver (PWM, direction or enable output) refused a write.
    Actuator,
    /// The angles were not still at start-up within the time allowed, so no zero could be
    /// taken.
    ZeroingTimeout,
    /// The arm never reached the limit switch while looking for its zero.
    HomingTimeout,
    /// The arm was not centred and still within the reset's time limit.
    ResetTimeout,
}

impl PlantFault {
    /// One line for logs and the host.
    pub fn as_str(self) -> &'static str {
        match self {
            PlantFault::ArmSensor => "arm angle sensor read failed",
            PlantFault::PendulumSensor => "pendulum angle sensor read failed",
            PlantFault::LimitSwitch => "limit switch input read failed",
            PlantFault::Actuator => "motor driver write failed",
            PlantFault::ZeroingTimeout => "angles never still at start-up: no zero taken",
            PlantFault::HomingTimeout => "arm never reached its limit switch while homing",
            PlantFault::ResetTimeout => "arm not centred and still within the reset time limit",
        }
    }
}

/// Names of the plant models, as [`AnyPlant::by_name`] accepts them and as each model's
/// [`PlantDescription::name`] reports.
pub const PLANT_NAMES: [&str; 3] = ["pendulum", "cartpole", "qube"];

/// Any of the plant models, chosen at run time by name without a heap (the trainer's
/// `--plant` flag, a simulated device's configuration).
// No heap to box the larger models into; the QUBE (about 0.5 KiB with its parameter
// settings) sets the size.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum AnyPlant {
    /// Gymnasium `Pendulum-v1` (see [`pendulum`]).
    Pendulum(Pendulum),
    /// Gymnasium `CartPole-v1` (see [`cartpole`]).
    CartPole(CartPole),
    /// QUBE-Servo 2 rotary pendulum (see [`qube`]).
    Qube(Qube),
}

impl AnyPlant {
    /// The model called `name` (one of [`PLANT_NAMES`], exact match), in the initial state
    /// drawn from seed 0; `None` for any other name.
    pub fn by_name(name: &str) -> Option<AnyPlant> {
        match name {
            "pendulum" => Some(AnyPlant::Pendulum(Pendulum::new())),
            "cartpole" => Some(AnyPlant::CartPole(CartPole::new())),
            "qube" => Some(AnyPlant::Qube(Qube::new())),
            _ => None,
        }
    }

    /// The run-time parameters of the model called `name` (physical constants, then
    /// imperfections), in the order its draws take them; `None` for any other name.
    pub fn params_of(name: &str) -> Option<&'static [ParamSpec]> {
        match name {
            "pendulum" => Some(&pendulum::PARAMS),
            "cartpole" => Some(&cartpole::PARAMS),
            "qube" => Some(&qube::PARAMS),
            _ => None,
        }
    }

    /// Sets the model's parameters like [`Plant::set_params`], then refuses any later
    /// setting as a physical plant does: a simulated rig whose physics the host is not told.
    pub fn fix_params(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        self.set_params(params)?;
        match self {
            AnyPlant::Pendulum(p) => p.lock_params(),
            AnyPlant::CartPole(p) => p.lock_params(),
            AnyPlant::Qube(p) => p.lock_params(),
        }
        Ok(())
    }

    /// The model's name, one of [`PLANT_NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            AnyPlant::Pendulum(_) => PLANT_NAMES[0],
            AnyPlant::CartPole(_) => PLANT_NAMES[1],
            AnyPlant::Qube(_) => PLANT_NAMES[2],
        }
    }

    fn inner(&mut self) -> &mut dyn Plant {
        match self {
            AnyPlant::Pendulum(p) => p,
            AnyPlant::CartPole(p) => p,
            AnyPlant::Qube(p) => p,
        }
    }
}

impl Plant for AnyPlant {
    fn description(&self) -> PlantDescription {
        match self {
            AnyPlant::Pendulum(p) => p.description(),
            AnyPlant::CartPole(p) => p.description(),
            AnyPlant::Qube(p) => p.description(),
        }
    }

    fn reset(&mut self, seed: u64) {
        self.inner().reset(seed);
    }

    fn observe(&mut self, obs: &mut [f32]) {
        self.inner().observe(obs);
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        self.inner().actuate(action)
    }

    fn safe_state(&mut self) {
        self.inner().safe_state();
    }

    fn set_params(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        self.inner().set_params(params)
    }

    fn vary(&mut self, seed: u64) {
        self.inner().vary(seed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_shared::ActionSpace;

    #[test]
    fn by_name_knows_every_name_and_nothing_else() {
        for name in PLANT_NAMES {
            let plant = AnyPlant::by_name(name).expect("known name");
            assert_eq!(plant.name(), name);
            let d = plant.description();
            assert_eq!(d.name.as_str(), name);
            assert!(d.validate().is_ok(), "{name}: {:?}", d.validate());
        }
        assert!(AnyPlant::by_name("Pendulum").is_none());
        assert!(AnyPlant::by_name("").is_none());
    }

    /// FNV-1a over every observation, reward and termination of a few seeded episodes per
    /// model, driven by seeded actions up to 1.2 × the bounds (so clamping is exercised).
    fn fingerprint(name: &str) -> u64 {
        use tether_shared::seeds::SplitMix64;
        let mut plant = AnyPlant::by_name(name).expect("known name");
        let description = plant.description();
        let mut hash = 0xCBF2_9CE4_8422_2325u64;
        let mut feed = |bits: u32| {
            for byte in bits.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
            }
        };
        let mut actions = SplitMix64::new(99);
        let mut obs = [0.0f32; 16];
        for seed in 0..4 {
            plant.reset(seed);
            for _ in 0..description.episode_steps {
                let obs = &mut obs[..description.obs_dim as usize];
                plant.observe(obs);
                obs.iter().for_each(|v| feed(v.to_bits()));
                let outcome = match &description.action {
                    ActionSpace::Continuous { high, .. } => {
                        let bound = high[0] * 1.2;
                        plant.actuate(Action::Continuous(&[actions.uniform(-bound, bound)]))
                    }
                    ActionSpace::Discrete { n } => plant.actuate(Action::Discrete(
                        (actions.next_u64() % u64::from(*n)) as usize,
                    )),
                };
                feed(outcome.reward.to_bits());
                feed(u32::from(outcome.terminated));
                if outcome.terminated {
                    break;
                }
            }
        }
        hash
    }

    /// The models' dynamics, sensing and rewards bit for bit as they were when their
    /// constants became run-time parameters: nominal parameters must not change a seeded run.
    #[test]
    fn nominal_models_keep_their_bits() {
        let got: [u64; 3] = PLANT_NAMES.map(fingerprint);
        assert_eq!(
            got,
            [
                2_914_781_553_296_065_347,
                14_934_920_276_514_037_813,
                15_068_056_485_779_284_312
            ]
        );
    }

    #[test]
    fn dispatch_reaches_the_model() {
        let mut any = AnyPlant::by_name("pendulum").expect("known name");
        let mut direct = Pendulum::new();
        any.reset(7);
        direct.reset(7);
        let a = any.actuate(Action::Continuous(&[1.0]));
        let b = direct.actuate(Action::Continuous(&[1.0]));
        assert_eq!(a, b);
        let (mut oa, mut ob) = ([0.0; 3], [0.0; 3]);
        any.observe(&mut oa);
        direct.observe(&mut ob);
        assert_eq!(oa, ob);
    }
}
