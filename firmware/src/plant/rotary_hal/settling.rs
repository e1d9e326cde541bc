//! The rotary plant's way to an episode's start: zeros at start-up, then centring the arm
//! and waiting for stillness, one tick per [`Plant::settle`](crate::plant::Plant::settle)
//! call, each bounded by a time limit that ends as a fault.

use embedded_hal::digital::InputPin;

use super::{ArmZero, MotorDriver, QuadratureEncoder, Reading, RotaryPendulum, signed};
use crate::clock::Clock;
use crate::plant::{PlantFault, Settling};

/// Where the plant is on its way to an episode's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Phase {
    /// Waiting for both angles to be still to take the zeros; `centre` once a reset asked.
    Zeroing { still: Stillness, centre: bool },
    /// Driving the arm to its limit switch (pendulum zero taken already).
    Homing { since_us: u64, centre: bool },
    /// Zeroed, no reset asked: observing, and test pulses may drive the motor.
    Idle,
    /// Bringing the arm to its centre and waiting for both angles to be still.
    Centring(Stillness),
    /// At the episode's start, or in it.
    Ready,
}

impl Phase {
    pub(super) fn zeroing(now_us: u64) -> Self {
        Phase::Zeroing {
            still: Stillness::new(now_us),
            centre: false,
        }
    }

    /// Whether commands from outside (the policy, a test pulse) may drive the motor.
    pub(super) fn may_actuate(&self) -> bool {
        matches!(self, Phase::Idle | Phase::Ready)
    }

    /// A reset during zeroing or homing centres the arm once the zeros are taken.
    pub(super) fn request_centring(&mut self) {
        if let Phase::Zeroing { centre, .. } | Phase::Homing { centre, .. } = self {
            *centre = true;
        }
    }
}

/// How long both sensors have stayed within one count of a reference reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Stillness {
    started_us: u64,
    since_us: u64,
    reference: Option<(i32, i32)>,
}

impl Stillness {
    pub(super) fn new(now_us: u64) -> Self {
        Stillness {
            started_us: now_us,
            since_us: now_us,
            reference: None,
        }
    }

    /// Takes `reading` into account; returns how long (µs) the sensors have been still.
    fn update(&mut self, reading: &Reading) -> u64 {
        let moved = self.reference.is_none_or(|(arm, pendulum)| {
            reading.arm.wrapping_sub(arm).abs() > 1
                || reading.pendulum.wrapping_sub(pendulum).abs() > 1
        });
        if moved {
            self.reference = Some((reading.arm, reading.pendulum));
            self.since_us = reading.at_us;
        }
        reading.at_us.saturating_sub(self.since_us)
    }

    /// µs since this phase began.
    fn age(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.started_us)
    }
}

impl<M, A, P, S, C> RotaryPendulum<M, A, P, S, C>
where
    M: MotorDriver,
    A: QuadratureEncoder,
    P: QuadratureEncoder,
    S: InputPin,
    C: Clock,
{
    /// One tick of the way to the start, on a fresh reading.
    pub(super) fn settle_tick(&mut self) -> Result<Settling, PlantFault> {
        let now = self.last.at_us;
        let (next, state) = match self.phase {
            Phase::Zeroing { mut still, centre } => self.zeroing_tick(&mut still, centre, now)?,
            Phase::Homing { since_us, centre } => self.homing_tick(since_us, centre, now)?,
            Phase::Centring(mut still) => self.centring_tick(&mut still, now)?,
            Phase::Idle => (Phase::Idle, Settling::Ready),
            Phase::Ready => (Phase::Ready, Settling::Ready),
        };
        self.phase = next;
        Ok(state)
    }

    /// After the zeros: centring if a reset asked for it, otherwise idle and ready to watch.
    fn zeroed(&mut self, centre: bool, now: u64) -> (Phase, Settling) {
        self.restart_velocities();
        if centre {
            (Phase::Centring(Stillness::new(now)), Settling::Busy)
        } else {
            (Phase::Idle, Settling::Ready)
        }
    }

    fn zeroing_tick(
        &mut self,
        still: &mut Stillness,
        centre: bool,
        now: u64,
    ) -> Result<(Phase, Settling), PlantFault> {
        if still.update(&self.last) < self.config.still_time_us {
            if still.age(now) > self.config.zeroing_timeout_us {
                return Err(PlantFault::ZeroingTimeout);
            }
            return Ok((
                Phase::Zeroing {
                    still: *still,
                    centre,
                },
                Settling::Busy,
            ));
        }
        // Hanging still: this is the pendulum's zero; the arm's is here or at the switch.
        self.zeros = Some((self.last.arm, self.last.pendulum));
        self.update_measured();
        match self.config.arm_zero {
            ArmZero::AtRest => Ok(self.zeroed(centre, now)),
            ArmZero::AgainstLimit { .. } => Ok((
                Phase::Homing {
                    since_us: now,
                    centre,
                },
                Settling::Busy,
            )),
        }
    }

    fn homing_tick(
        &mut self,
        since_us: u64,
        centre: bool,
        now: u64,
    ) -> Result<(Phase, Settling), PlantFault> {
        let ArmZero::AgainstLimit { volts, centre_rad } = self.config.arm_zero else {
            return Ok(self.zeroed(centre, now));
        };
        if self.switch_pressed()? {
            self.motor.disable().map_err(|_| PlantFault::Actuator)?;
            // At the switch the arm is at -centre_rad: its zero is centre_rad further on.
            let centre_counts = libm::roundf(centre_rad / self.arm_rad_per_count) as i32;
            let zero = self
                .last
                .arm
                .wrapping_add(signed(centre_counts, self.config.arm_reversed));
            let pendulum_zero = self.zeros.map_or(self.last.pendulum, |z| z.1);
            self.zeros = Some((zero, pendulum_zero));
            self.update_measured();
            return Ok(self.zeroed(centre, now));
        }
        if now.saturating_sub(since_us) > self.config.zeroing_timeout_us {
            return Err(PlantFault::HomingTimeout);
        }
        self.motor.drive(volts).map_err(|_| PlantFault::Actuator)?;
        Ok((Phase::Homing { since_us, centre }, Settling::Busy))
    }

    fn centring_tick(
        &mut self,
        still: &mut Stillness,
        now: u64,
    ) -> Result<(Phase, Settling), PlantFault> {
        let [theta, _, theta_dot, alpha_dot] = self.measured;
        let c = self.config;
        let still_for = still.update(&self.last);
        if libm::fabsf(theta) <= c.centre_tolerance_rad && still_for >= c.still_time_us {
            self.motor.disable().map_err(|_| PlantFault::Actuator)?;
            self.restart_velocities();
            self.tripped = false;
            return Ok((Phase::Ready, Settling::Ready));
        }
        if still.age(now) > c.reset_timeout_us {
            return Err(PlantFault::ResetTimeout);
        }
        let volts = -c.centre_kp * theta - c.centre_kd * theta_dot + c.pendulum_damping * alpha_dot;
        let volts = volts.clamp(-c.reset_max_volts, c.reset_max_volts);
        self.motor.drive(volts).map_err(|_| PlantFault::Actuator)?;
        Ok((Phase::Centring(*still), Settling::Busy))
    }
}
