//! The rotary plant's settings: sensor resolution, safety limits, zeroing and reset.

use core::f32::consts::PI;

use crate::plant::qube;

/// How the arm's zero (the centre of its range) is found at start-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArmZero {
    /// The arm rests at its centre when the device starts (a mark or a jig puts it there).
    AtRest,
    /// The arm is driven at `volts` (signed: its sign picks the direction) until the limit
    /// switch closes; the centre is `centre_rad` from there (signed, in the arm's positive
    /// direction). Needs a limit switch.
    AgainstLimit {
        /// Homing voltage, volts (small: the arm must stop at the switch without damage).
        volts: f32,
        /// The centre's angle seen from the switch, radians.
        centre_rad: f32,
    },
}

/// Everything the rotary plant needs to know about the rig.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotaryConfig {
    /// Counts per revolution of the arm's encoder (4 × its lines for a quadrature encoder
    /// counted on both edges of both channels).
    pub arm_counts_per_rev: u32,
    /// Counts per revolution of the pendulum's sensor (4096 for an AS5600).
    pub pendulum_counts_per_rev: u32,
    /// Reverses the arm's measured direction (swapped encoder channels, fixed in software).
    pub arm_reversed: bool,
    /// Reverses the pendulum's measured direction.
    pub pendulum_reversed: bool,
    /// The episode terminates (bridge off) when `|θ|` exceeds this, radians.
    pub arm_limit_rad: f32,
    /// The episode terminates (bridge off) when the arm turns faster than this, rad/s.
    pub max_arm_speed: f32,
    /// The episode terminates (bridge off) when the pendulum turns faster than this, rad/s.
    pub max_pendulum_speed: f32,
    /// Whether the limit switch reads high when pressed (false: it pulls the input low).
    pub limit_switch_active_high: bool,
    /// How the arm's zero is found.
    pub arm_zero: ArmZero,
    /// The angles count as still when neither sensor moved more than one count for this
    /// long, µs.
    pub still_time_us: u64,
    /// Start-up zeroing (and homing) must finish within this, µs; otherwise a fault.
    pub zeroing_timeout_us: u64,
    /// A reset must have the arm centred and both angles still within this, µs; otherwise a
    /// fault.
    pub reset_timeout_us: u64,
    /// The arm counts as centred within this of its zero, radians.
    pub centre_tolerance_rad: f32,
    /// Proportional gain of the reset's centring, V/rad.
    pub centre_kp: f32,
    /// Derivative gain of the reset's centring, V·s/rad.
    pub centre_kd: f32,
    /// Gain from the pendulum's angular velocity to arm voltage while resetting, V·s/rad:
    /// moving the arm with the swinging pendulum takes its energy out.
    pub pendulum_damping: f32,
    /// Largest voltage magnitude the reset applies, volts.
    pub reset_max_volts: f32,
}

impl RotaryConfig {
    /// Settings for a QUBE-Servo-2-class rig: 2048-count encoders on both axes, the qube
    /// model's ±135° arm limit, speed limits above anything a swing-up needs (tighten them
    /// for your rig), the arm zero at rest, 0.5 s of stillness, a 5 s zeroing and a 20 s
    /// reset limit.
    pub const fn qube_class() -> Self {
        RotaryConfig {
            arm_counts_per_rev: qube::ENCODER_COUNTS as u32,
            pendulum_counts_per_rev: qube::ENCODER_COUNTS as u32,
            arm_reversed: false,
            pendulum_reversed: false,
            arm_limit_rad: qube::ARM_LIMIT,
            max_arm_speed: 100.0,
            max_pendulum_speed: 100.0,
            limit_switch_active_high: false,
            arm_zero: ArmZero::AtRest,
            still_time_us: 500_000,
            zeroing_timeout_us: 5_000_000,
            reset_timeout_us: 20_000_000,
            centre_tolerance_rad: 2.0 * PI / 180.0,
            centre_kp: 3.0,
            centre_kd: 0.15,
            pendulum_damping: 0.05,
            reset_max_volts: 2.0,
        }
    }

    /// The first setting that cannot be used, if any.
    pub fn check(&self) -> Result<(), RotaryConfigError> {
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if self.arm_counts_per_rev < 4 || self.pendulum_counts_per_rev < 4 {
            return Err(RotaryConfigError::CountsPerRev);
        }
        if !(positive(self.arm_limit_rad) && self.arm_limit_rad < PI) {
            return Err(RotaryConfigError::ArmLimit);
        }
        if !positive(self.max_arm_speed) || !positive(self.max_pendulum_speed) {
            return Err(RotaryConfigError::SpeedLimit);
        }
        let gains = [self.centre_kp, self.centre_kd, self.pendulum_damping];
        if !gains.iter().all(|g| g.is_finite()) || !positive(self.reset_max_volts) {
            return Err(RotaryConfigError::ResetGains);
        }
        if !positive(self.centre_tolerance_rad) || self.still_time_us == 0 {
            return Err(RotaryConfigError::Stillness);
        }
        if let ArmZero::AgainstLimit { volts, centre_rad } = self.arm_zero
            && !(positive(libm::fabsf(volts)) && centre_rad.is_finite())
        {
            return Err(RotaryConfigError::Homing);
        }
        Ok(())
    }
}

/// A [`RotaryConfig`] (or the hardware handed with it) that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RotaryConfigError {
    /// A sensor resolution below 4 counts per revolution.
    CountsPerRev,
    /// The arm limit is not in `(0, π)`.
    ArmLimit,
    /// A speed limit that is not a positive number.
    SpeedLimit,
    /// A reset gain that is not finite, or a reset voltage that is not positive.
    ResetGains,
    /// A centre tolerance or still time of zero.
    Stillness,
    /// Homing against the limit without a usable voltage or centre angle.
    Homing,
    /// Homing against the limit without a limit switch.
    NoLimitSwitch,
    /// The bridge's duty mapping (supply, deadzone) cannot be used.
    DutyMapping,
}

impl core::fmt::Display for RotaryConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RotaryConfigError::CountsPerRev => "sensor resolution below 4 counts per turn",
            RotaryConfigError::ArmLimit => "arm limit must be between 0 and pi radians",
            RotaryConfigError::SpeedLimit => "speed limits must be positive",
            RotaryConfigError::ResetGains => "reset gains must be finite, reset volts positive",
            RotaryConfigError::Stillness => "centre tolerance and still time must be positive",
            RotaryConfigError::Homing => "homing needs a non-zero voltage and a finite centre",
            RotaryConfigError::NoLimitSwitch => "homing against the limit needs a limit switch",
            RotaryConfigError::DutyMapping => "supply must be positive and above the deadzone",
        })
    }
}
