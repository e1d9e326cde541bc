//! A real rotary (Furuta) pendulum over embedded-hal 1.0: a DC motor on an H-bridge turns
//! the arm, two angle sensors read the arm and the pendulum.
//!
//! [`RotaryPendulum`] keeps the [`qube`] model's interface exactly — observation
//! `[sin θ, cos θ, sin α, cos α, θ̇, α̇]`, ±6 V, 250 Hz, 1250-step episodes, the same reward
//! ([`qube::reward`]) and the same velocity estimate (count differences over the control
//! period through the model's first-order low-pass) — and reports itself as `qube`, so the
//! qube preset and a policy trained on the model apply unchanged.
//!
//! Hardware, each behind a small seam: the motor driver ([`bridge`]: PWM + direction, or
//! two PWMs, with supply-voltage scaling and deadzone compensation), the two angle sensors
//! ([`encoder::QuadratureEncoder`]: a timer in encoder mode, or an AS5600 over I²C), an
//! optional limit switch (`InputPin`), and the firmware's [`Clock`].
//!
//! # Timing: what differs from the model
//!
//! A real plant is sensed in [`Plant::observe`], at the start of the step, and
//! [`Plant::actuate`] only writes the command: the state after the step is not known yet.
//! So the reward is [`qube::reward`] of the angles measured at the start of the step and the
//! voltage applied during it (the model uses the angles at its end), and a limit crossed
//! during a step ends the episode at the next step's observation. Episodes therefore match
//! the model's observation by observation, with the rewards shifted by one step.
//!
//! # Safety (in the plant, whatever the runtime does)
//!
//! - Every observation checks the arm angle against [`RotaryConfig::arm_limit_rad`], both
//!   speeds against their limits and the limit switch: any of them puts the bridge in its
//!   safe state (0 % duty, enable low) and terminates the episode; no voltage is applied
//!   until an observation finds the plant back inside its limits.
//! - A sensor, switch or driver error latches a [`PlantFault`]: safe state, the episode ends
//!   as a fault, and the plant stays off until the device restarts. Nothing panics.
//! - Zeros: the pendulum's from hanging still at start-up; the arm's at rest at start-up or
//!   against the limit switch ([`ArmZero`]). Both limits depend on them, so no voltage is
//!   applied before they are taken.
//! - [`Plant::reset`] centres the arm (a PD loop, with the pendulum's swing damped by the
//!   arm) and waits until both angles are still, without blocking: [`Plant::settle`] does
//!   one tick per control period, and a reset that takes longer than
//!   [`RotaryConfig::reset_timeout_us`] ends as [`PlantFault::ResetTimeout`].

pub mod bridge;
mod config;
pub mod encoder;
mod settling;

use embedded_hal::digital::InputPin;
use tether_shared::PlantDescription;

use crate::clock::Clock;
use crate::plant::common::{scalar_command, write_obs};
use crate::plant::{Action, Plant, PlantFault, Settling, StepOutcome, qube};
use crate::trig;

pub use bridge::{
    DriverError, DutyMapping, MotorDriver, NoEnable, PwmDirectionBridge, TwoPwmBridge,
};
pub use config::{ArmZero, RotaryConfig, RotaryConfigError};
pub use encoder::{CountExtender, QuadratureEncoder};
use settling::{Phase, Stillness};

/// No limit switch wired: an input that is never active.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLimitSwitch;

impl embedded_hal::digital::ErrorType for NoLimitSwitch {
    type Error = core::convert::Infallible;
}

impl InputPin for NoLimitSwitch {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Raw sensor counts and when they were read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Reading {
    arm: i32,
    pendulum: i32,
    at_us: u64,
}

/// The rotary pendulum rig (see the module docs), generic over its motor driver `M`, arm
/// sensor `A`, pendulum sensor `P`, limit switch `S` and clock `C`.
pub struct RotaryPendulum<M, A, P, S, C> {
    motor: M,
    arm: A,
    pendulum: P,
    switch: Option<S>,
    clock: C,
    config: RotaryConfig,
    arm_rad_per_count: f32,
    pendulum_rad_per_count: f32,
    period_us: u64,
    filter_gain: f32,
    /// Raw counts at the zeros: arm centred, pendulum hanging (`None` before zeroing).
    zeros: Option<(i32, i32)>,
    phase: Phase,
    fault: Option<PlantFault>,
    /// Outside a limit at the last observation (bridge off until back inside).
    tripped: bool,
    /// The last reading, and the one velocities were last differenced from.
    last: Reading,
    velocity_base: Option<Reading>,
    /// `[θ, α, θ̇, α̇]` as measured: radians (α 0 upright) and filtered rad/s.
    measured: [f32; 4],
}

impl<M, A, P, S, C> RotaryPendulum<M, A, P, S, C>
where
    M: MotorDriver,
    A: QuadratureEncoder,
    P: QuadratureEncoder,
    S: InputPin,
    C: Clock,
{
    /// A rig over the given hardware, with the bridge off. Nothing moves until the zeros
    /// are taken ([`Plant::settle`], after [`Plant::reset`] or from the runtime's probe).
    pub fn new(
        motor: M,
        arm: A,
        pendulum: P,
        switch: Option<S>,
        clock: C,
        config: RotaryConfig,
    ) -> Result<Self, RotaryConfigError> {
        config.check()?;
        if matches!(config.arm_zero, ArmZero::AgainstLimit { .. }) && switch.is_none() {
            return Err(RotaryConfigError::NoLimitSwitch);
        }
        let now = clock.now_us();
        let mut plant = RotaryPendulum {
            motor,
            arm,
            pendulum,
            switch,
            clock,
            config,
            arm_rad_per_count: qube_angle_per_count(config.arm_counts_per_rev),
            pendulum_rad_per_count: qube_angle_per_count(config.pendulum_counts_per_rev),
            period_us: qube::description().control_period_us(),
            filter_gain: 1.0 - libm::expf(-qube::VELOCITY_CUTOFF * qube::DT),
            zeros: None,
            phase: Phase::zeroing(now),
            fault: None,
            tripped: false,
            last: Reading::default(),
            velocity_base: None,
            measured: [0.0, core::f32::consts::PI, 0.0, 0.0],
        };
        plant.safe_state();
        Ok(plant)
    }

    /// `[θ, α, θ̇, α̇]` as last measured: radians (α 0 upright, ±π hanging) and rad/s.
    pub fn measured(&self) -> [f32; 4] {
        self.measured
    }

    /// Raw counts at the zeros (arm centre, pendulum hanging), once taken.
    pub fn zeros(&self) -> Option<(i32, i32)> {
        self.zeros
    }

    /// The hardware back (for tests and a board's shutdown).
    pub fn into_parts(self) -> (M, A, P, Option<S>, C) {
        (self.motor, self.arm, self.pendulum, self.switch, self.clock)
    }

    /// Latches `fault` and turns the bridge off.
    fn trip(&mut self, fault: PlantFault) {
        if self.fault.is_none() {
            self.fault = Some(fault);
        }
        let _ = self.motor.disable();
    }

    /// Reads both sensors (a failure latches a fault) and updates the measured state.
    fn sense(&mut self) -> Result<(), PlantFault> {
        let arm = self.arm.count().map_err(|_| PlantFault::ArmSensor)?;
        let pendulum = self
            .pendulum
            .count()
            .map_err(|_| PlantFault::PendulumSensor)?;
        self.last = Reading {
            arm,
            pendulum,
            at_us: self.clock.now_us(),
        };
        self.update_measured();
        Ok(())
    }

    /// The arm's count from its zero and the pendulum's count wrapped to `[-n/2, n/2)` with 0
    /// upright, both in the rig's positive directions.
    fn relative_counts(&self, reading: &Reading) -> (i32, i32) {
        let (arm_zero, pendulum_zero) = self.zeros.unwrap_or((self.last.arm, self.last.pendulum));
        let arm = signed(reading.arm.wrapping_sub(arm_zero), self.config.arm_reversed);
        let n = self.config.pendulum_counts_per_rev as i32;
        let hanging = signed(
            reading.pendulum.wrapping_sub(pendulum_zero),
            self.config.pendulum_reversed,
        );
        (arm, wrap_count(hanging.wrapping_add(n / 2), n))
    }

    /// Angles from the last reading; velocities from its difference to the base reading, as
    /// the model does, when about a control period has passed (an earlier second reading,
    /// such as an episode's final observation, keeps the estimate).
    fn update_measured(&mut self) {
        let (arm, pendulum) = self.relative_counts(&self.last);
        self.measured[0] = arm as f32 * self.arm_rad_per_count;
        self.measured[1] = pendulum as f32 * self.pendulum_rad_per_count;
        let Some(base) = self.velocity_base else {
            self.velocity_base = Some(self.last);
            return;
        };
        let elapsed = self.last.at_us.saturating_sub(base.at_us);
        if elapsed < self.period_us / 2 {
            return;
        }
        // On time (within half a period either way): the nominal period, as the model; late
        // (a missed deadline): the time that really passed.
        let dt = if elapsed <= self.period_us + self.period_us / 2 {
            qube::DT
        } else {
            elapsed as f32 * 1e-6
        };
        let (base_arm, base_pendulum) = self.relative_counts(&base);
        let n = self.config.pendulum_counts_per_rev as i32;
        let d_arm = arm.wrapping_sub(base_arm);
        let d_pendulum = wrap_count(pendulum.wrapping_sub(base_pendulum), n);
        let raw = [
            d_arm as f32 * self.arm_rad_per_count / dt,
            d_pendulum as f32 * self.pendulum_rad_per_count / dt,
        ];
        let a = self.filter_gain;
        self.measured[2] += a * (raw[0] - self.measured[2]);
        self.measured[3] += a * (raw[1] - self.measured[3]);
        self.velocity_base = Some(self.last);
    }

    /// Starts the velocity estimate afresh (0 rad/s) from the last reading.
    fn restart_velocities(&mut self) {
        self.measured[2] = 0.0;
        self.measured[3] = 0.0;
        self.velocity_base = Some(self.last);
    }

    /// Whether the limit switch is pressed; a read error latches a fault.
    fn switch_pressed(&mut self) -> Result<bool, PlantFault> {
        let active_high = self.config.limit_switch_active_high;
        match self.switch.as_mut() {
            None => Ok(false),
            Some(pin) => pin
                .is_high()
                .map(|high| high == active_high)
                .map_err(|_| PlantFault::LimitSwitch),
        }
    }

    /// Whether the measured state is outside a limit (arm angle, speeds, switch).
    fn outside_limits(&mut self) -> Result<bool, PlantFault> {
        let [theta, _, theta_dot, alpha_dot] = self.measured;
        let c = &self.config;
        let out = libm::fabsf(theta) > c.arm_limit_rad
            || libm::fabsf(theta_dot) > c.max_arm_speed
            || libm::fabsf(alpha_dot) > c.max_pendulum_speed;
        Ok(self.switch_pressed()? || out)
    }

    /// Applies `volts` unless faulted, outside a limit or not zeroed/settled.
    fn drive(&mut self, volts: f32) -> f32 {
        if self.fault.is_some() || self.tripped || !self.phase.may_actuate() {
            let _ = self.motor.disable();
            return 0.0;
        }
        match self.motor.drive(volts) {
            Ok(()) => volts,
            Err(DriverError) => {
                self.trip(PlantFault::Actuator);
                0.0
            }
        }
    }
}

impl<M, A, P, S, C> Plant for RotaryPendulum<M, A, P, S, C>
where
    M: MotorDriver,
    A: QuadratureEncoder,
    P: QuadratureEncoder,
    S: InputPin,
    C: Clock,
{
    fn description(&self) -> PlantDescription {
        qube::description()
    }

    fn reset(&mut self, _seed: u64) {
        // A real rig starts where it is: the seed cannot place it.
        self.tripped = false;
        if self.zeros.is_some() {
            self.phase = Phase::Centring(Stillness::new(self.clock.now_us()));
        } else {
            self.phase.request_centring();
        }
    }

    fn observe(&mut self, obs: &mut [f32]) {
        if self.fault.is_none() {
            let checked = self.sense().and_then(|()| self.outside_limits());
            match checked {
                Ok(out) => {
                    if out && !self.tripped {
                        let _ = self.motor.disable();
                    }
                    self.tripped = out;
                }
                Err(fault) => self.trip(fault),
            }
        }
        let [theta, alpha, theta_dot, alpha_dot] = self.measured;
        let (sin_theta, cos_theta) = trig::sin_cos(theta);
        let (sin_alpha, cos_alpha) = trig::sin_cos(alpha);
        write_obs(
            obs,
            &[
                sin_theta, cos_theta, sin_alpha, cos_alpha, theta_dot, alpha_dot,
            ],
        );
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        let volts = self.drive(scalar_command(action, qube::MAX_VOLTAGE));
        let [theta, alpha, _, _] = self.measured;
        StepOutcome {
            reward: qube::reward(theta, alpha, volts),
            terminated: self.tripped || self.fault.is_some(),
        }
    }

    fn safe_state(&mut self) {
        if self.motor.disable().is_err() && self.fault.is_none() {
            self.fault = Some(PlantFault::Actuator);
        }
    }

    fn settle(&mut self) -> Settling {
        if self.fault.is_none()
            && let Err(fault) = self.sense()
        {
            self.trip(fault);
        }
        if self.fault.is_some() {
            return Settling::Failed;
        }
        match self.settle_tick() {
            Ok(state) => state,
            Err(fault) => {
                self.trip(fault);
                Settling::Failed
            }
        }
    }

    fn settle_tick_us(&self) -> u64 {
        self.period_us
    }

    fn fault(&self) -> Option<PlantFault> {
        self.fault
    }
}

/// One count of a sensor with `counts_per_rev` counts, radians (for 2048 the model's
/// [`qube::COUNT_RAD`] exactly).
fn qube_angle_per_count(counts_per_rev: u32) -> f32 {
    crate::plant::common::TAU / counts_per_rev as f32
}

/// `count` negated when `reversed`.
fn signed(count: i32, reversed: bool) -> i32 {
    if reversed {
        count.wrapping_neg()
    } else {
        count
    }
}

/// Wraps a count (or count difference) of an `n`-count sensor into `[-n/2, n/2)`.
fn wrap_count(count: i32, n: i32) -> i32 {
    count.wrapping_add(n / 2).rem_euclid(n) - n / 2
}

#[cfg(test)]
mod tests;
