//! A HAL-level twin of the QUBE: the embedded-hal traits the rotary plant drives (a PWM, a
//! direction and an enable output, two quadrature encoders) implemented over the qube
//! model, so the firmware's real `RotaryPendulum` runs inside a real `Device` against
//! simulated physics.
//!
//! The twin's world moves with the device's (virtual) clock, in whole control periods of
//! the model (4 ms, voltage held): reading a sensor first integrates every period that has
//! passed; changing an output does the same and restarts the period grid at that instant,
//! so during an episode — where the device reads and writes exactly once per period — the
//! world steps exactly as the model plant does. (Between episodes, at a restart of the
//! grid, the world loses the part of a period that had passed: a fixture's simplification.)
//! Encoders read `round(angle / count)` of 2048-count encoders like the model's, as
//! continuous counts; the duty is quantised to 1/10 000 of a 12 V supply.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::digital::{ErrorType, OutputPin};
use embedded_hal::pwm::{ErrorType as PwmErrorType, SetDutyCycle};
use tether_firmware::Clock;
use tether_firmware::plant::qube::{self, Qube};
use tether_firmware::plant::rotary_hal::{
    DutyMapping, NoLimitSwitch, PwmDirectionBridge, QuadratureEncoder, RotaryConfig, RotaryPendulum,
};
use tether_firmware::plant::{Action, Plant};
use tether_firmware::sim::SimClock;

/// The twin's PWM full scale.
pub const MAX_DUTY: u16 = 10_000;
/// The twin's bridge supply, volts.
pub const SUPPLY_VOLTS: f32 = 12.0;

/// The simulated rig: the model, what the outputs say, and the world's time.
struct World {
    model: Qube,
    duty: u16,
    forward: bool,
    enabled: bool,
    /// Start of the current period of the world's grid, µs.
    at_us: u64,
    /// Continuous encoder counts (the model's pendulum count wraps; a real encoder's does
    /// not).
    arm_count: i32,
    pendulum_count: i32,
}

impl World {
    fn volts(&self) -> f32 {
        if !self.enabled {
            return 0.0;
        }
        let v = f32::from(self.duty) / f32::from(MAX_DUTY) * SUPPLY_VOLTS;
        if self.forward { v } else { -v }
    }

    /// Integrates every whole period up to `now`.
    fn catch_up(&mut self, now: u64) {
        let period = qube::description().control_period_us();
        while self.at_us + period <= now {
            let before = self.model.measured();
            // `set_state` keeps the state and clears the model's own episode bookkeeping (a
            // terminated flag would freeze it): the twin's world has no episodes.
            let state = self.model.state();
            self.model.set_state(state);
            let volts = self.volts().clamp(-qube::MAX_VOLTAGE, qube::MAX_VOLTAGE);
            let _ = self.model.actuate(Action::Continuous(&[volts]));
            let after = self.model.measured();
            self.arm_count += counts(after[0]) - counts(before[0]);
            self.pendulum_count += wrap(counts(after[1]) - counts(before[1]));
            self.at_us += period;
        }
    }

    /// An output changes at `now`: the world catches up and its grid restarts there.
    fn output_changed(&mut self, now: u64) {
        self.catch_up(now);
        self.at_us = now;
    }
}

fn counts(angle: f32) -> i32 {
    (angle / qube::COUNT_RAD).round() as i32
}

fn wrap(d: i32) -> i32 {
    (d + 1024).rem_euclid(2048) - 1024
}

/// A handle on the twin's world, shared by its parts.
#[derive(Clone)]
pub struct Twin {
    world: Arc<Mutex<World>>,
    clock: SimClock,
}

impl Twin {
    /// A twin at rest hanging straight down (θ = 0, α = π) on the virtual `clock`.
    pub fn new(clock: SimClock) -> Self {
        Self::with_state(clock, [0.0, std::f32::consts::PI, 0.0, 0.0])
    }

    /// A twin in `state` (`[θ, α, θ̇, α̇]`, the model's convention).
    pub fn with_state(clock: SimClock, state: [f32; 4]) -> Self {
        let model = Qube::with_state(state);
        let at_us = clock.now_us();
        let measured = model.measured();
        Twin {
            world: Arc::new(Mutex::new(World {
                model,
                duty: 0,
                forward: true,
                enabled: false,
                at_us,
                arm_count: counts(measured[0]),
                pendulum_count: counts(measured[1]) + 1024,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model's true state `[θ, α, θ̇, α̇]` now.
    pub fn state(&self) -> [f32; 4] {
        self.lock().model.state()
    }

    /// The voltage the bridge puts on the motor now.
    pub fn volts(&self) -> f32 {
        self.lock().volts()
    }

    /// The rotary plant over this twin (qube-class settings), ready for a `Device`.
    pub fn plant(&self, config: RotaryConfig) -> TwinPlant {
        let mapping = DutyMapping {
            supply_voltage: SUPPLY_VOLTS,
            deadzone_voltage: 0.0,
            reversed: false,
        };
        let bridge = PwmDirectionBridge::new(
            TwinPwm(self.clone()),
            TwinOutput(self.clone(), Output::Direction),
            TwinOutput(self.clone(), Output::Enable),
            mapping,
        );
        RotaryPendulum::new(
            bridge,
            TwinEncoder(self.clone(), Sensor::Arm),
            TwinEncoder(self.clone(), Sensor::Pendulum),
            None,
            self.clock.clone(),
            config,
        )
        .expect("qube-class settings are valid")
    }
}

/// The rotary plant as the twin runs it.
pub type TwinPlant = RotaryPendulum<
    PwmDirectionBridge<TwinPwm, TwinOutput, TwinOutput>,
    TwinEncoder,
    TwinEncoder,
    NoLimitSwitch,
    SimClock,
>;

/// The bridge's PWM.
pub struct TwinPwm(Twin);

impl PwmErrorType for TwinPwm {
    type Error = core::convert::Infallible;
}

impl SetDutyCycle for TwinPwm {
    fn max_duty_cycle(&self) -> u16 {
        MAX_DUTY
    }

    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Self::Error> {
        let now = self.0.clock.now_us();
        let mut world = self.0.lock();
        world.output_changed(now);
        world.duty = duty.min(MAX_DUTY);
        Ok(())
    }
}

/// Which output a [`TwinOutput`] is.
#[derive(Clone, Copy)]
pub enum Output {
    /// The bridge's direction input (high: forward).
    Direction,
    /// The bridge's enable input.
    Enable,
}

/// A bridge output pin.
pub struct TwinOutput(Twin, Output);

impl ErrorType for TwinOutput {
    type Error = core::convert::Infallible;
}

impl TwinOutput {
    fn set(&mut self, high: bool) {
        let now = self.0.clock.now_us();
        let mut world = self.0.lock();
        world.output_changed(now);
        match self.1 {
            Output::Direction => world.forward = high,
            Output::Enable => world.enabled = high,
        }
    }
}

impl OutputPin for TwinOutput {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(true);
        Ok(())
    }
}

/// Which angle a [`TwinEncoder`] reads.
#[derive(Clone, Copy)]
pub enum Sensor {
    /// The arm's encoder.
    Arm,
    /// The pendulum's encoder.
    Pendulum,
}

/// A 2048-count encoder on one axis.
pub struct TwinEncoder(Twin, Sensor);

impl QuadratureEncoder for TwinEncoder {
    type Error = core::convert::Infallible;

    fn count(&mut self) -> Result<i32, Self::Error> {
        let now = self.0.clock.now_us();
        let mut world = self.0.lock();
        world.catch_up(now);
        Ok(match self.1 {
            Sensor::Arm => world.arm_count,
            Sensor::Pendulum => world.pendulum_count,
        })
    }
}

/// The qube model starting every episode from one given state (the comparison plant for
/// the twin, whose episodes start wherever its reset left the rig).
#[derive(Clone)]
pub struct QubeFrom {
    /// The model.
    pub model: Qube,
    /// `[θ, α, θ̇, α̇]` at each reset.
    pub start: [f32; 4],
}

impl Plant for QubeFrom {
    fn description(&self) -> tether_shared::PlantDescription {
        self.model.description()
    }
    fn reset(&mut self, _seed: u64) {
        self.model.set_state(self.start);
    }
    fn observe(&mut self, obs: &mut [f32]) {
        self.model.observe(obs);
    }
    fn actuate(&mut self, action: Action<'_>) -> tether_firmware::plant::StepOutcome {
        self.model.actuate(action)
    }
    fn safe_state(&mut self) {
        self.model.safe_state();
    }
}
