//! The `Plant` seam: the physical system a device controls, or a model of it.
//!
//! A real board implements [`Plant`] over its sensors and motor driver; the models in this
//! module implement it in software (libm, no heap) so they run in CI, on the host as
//! simulated devices, and on a real MCU as "virtual plants" for bring-up.

use tether_shared::PlantDescription;

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
}
