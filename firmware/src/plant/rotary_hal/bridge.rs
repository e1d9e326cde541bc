//! The motor-driver seam: a commanded voltage becomes PWM duty on an H-bridge.
//!
//! Two wirings over embedded-hal 1.0, both with an optional enable output:
//!
//! - [`PwmDirectionBridge`]: one PWM ([`SetDutyCycle`]) for the magnitude and one
//!   [`OutputPin`] for the direction. Fits bridges with a PWM/DIR (or PH/EN) interface:
//!   Cytron MD10C / MD13S / MD20A, Pololu DRV8876 and DRV8838 carriers in PH/EN mode,
//!   Pololu G2 high-power drivers, the DRV8874 in PH/EN mode.
//! - [`TwoPwmBridge`]: one PWM per bridge input, the idle input held at 0 %. Fits bridges
//!   driven IN1/IN2: DRV8871, DRV8833, L9110S, BTS7960 modules (RPWM/LPWM), the DRV8874 in
//!   IN/IN mode. (The L298N and TB6612 want two direction pins plus a PWM enable: wire IN2 as
//!   the inverse of IN1 with an inverter, or drive them as two PWMs on IN1/IN2 with ENA high.)
//!
//! The enable output (active high) is driven high before the first non-zero duty and low by
//! [`MotorDriver::disable`]; wire it with a pull-down so the bridge is off while the MCU is
//! unpowered or in reset. Bridges without one use [`NoEnable`].

use core::convert::Infallible;

use embedded_hal::digital::{ErrorType as PinErrorType, OutputPin, PinState};
use embedded_hal::pwm::SetDutyCycle;

/// A motor driver could not carry out a write (the PWM or a pin returned an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverError;

/// Drives a DC motor with a signed voltage.
///
/// Contract: [`MotorDriver::disable`] must leave the motor unpowered even when one of its
/// writes fails (it tries every write, then reports the failure); neither method may panic.
pub trait MotorDriver {
    /// Applies `volts` (positive: the arm's positive direction) until the next call.
    fn drive(&mut self, volts: f32) -> Result<(), DriverError>;
    /// Zero duty on every input and the enable output low.
    fn disable(&mut self) -> Result<(), DriverError>;
}

/// How a commanded voltage becomes a duty cycle.
///
/// `duty = round(max_duty · min(1, (|V| + deadzone) / supply))` for `|V| > 0`, and 0 for
/// `V = 0`: the bridge's supply voltage is what 100 % duty puts on the motor, and the deadzone
/// compensation adds the voltage a motor needs before it turns at all (static friction, the
/// bridge's dead time), so a small command still moves the arm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DutyMapping {
    /// Bridge supply voltage, volts (> 0).
    pub supply_voltage: f32,
    /// Deadzone compensation, volts, in `[0, supply_voltage)`.
    pub deadzone_voltage: f32,
    /// Reverses the motor's direction (a swapped pair of motor leads, fixed in software).
    pub reversed: bool,
}

impl DutyMapping {
    /// Whether the settings can be used (supply positive, deadzone inside it).
    pub fn is_valid(&self) -> bool {
        self.supply_voltage.is_finite()
            && self.supply_voltage > 0.0
            && self.deadzone_voltage.is_finite()
            && self.deadzone_voltage >= 0.0
            && self.deadzone_voltage < self.supply_voltage
    }

    /// The duty for `volts` on a PWM whose full scale is `max_duty`, and whether the motor
    /// turns forward (true) or in reverse. Non-finite commands give 0 duty.
    pub fn duty(&self, volts: f32, max_duty: u16) -> (u16, bool) {
        if !volts.is_finite() || volts == 0.0 {
            return (0, true);
        }
        let forward = (volts > 0.0) != self.reversed;
        let fraction =
            ((libm::fabsf(volts) + self.deadzone_voltage) / self.supply_voltage).min(1.0);
        let duty = libm::roundf(fraction * f32::from(max_duty));
        (duty as u16, forward)
    }
}

/// An enable output that is not wired (the bridge is always enabled).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEnable;

impl PinErrorType for NoEnable {
    type Error = Infallible;
}

impl OutputPin for NoEnable {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The enable output, driven only when its state changes.
struct Enable<E> {
    pin: E,
    on: Option<bool>,
}

impl<E: OutputPin> Enable<E> {
    fn set(&mut self, on: bool) -> Result<(), DriverError> {
        if self.on == Some(on) {
            return Ok(());
        }
        self.on = None;
        self.pin
            .set_state(PinState::from(on))
            .map_err(|_| DriverError)?;
        self.on = Some(on);
        Ok(())
    }
}

/// A PWM for the magnitude and a direction output (high: forward).
pub struct PwmDirectionBridge<P, D, E = NoEnable> {
    pwm: P,
    direction: D,
    enable: Enable<E>,
    max_duty: u16,
    mapping: DutyMapping,
}

impl<P: SetDutyCycle, D: OutputPin, E: OutputPin> PwmDirectionBridge<P, D, E> {
    /// Reads the PWM's full scale once; the bridge starts disabled only after the first
    /// [`MotorDriver::disable`] (the plant calls it at construction).
    pub fn new(pwm: P, direction: D, enable: E, mapping: DutyMapping) -> Self {
        let max_duty = pwm.max_duty_cycle();
        PwmDirectionBridge {
            pwm,
            direction,
            enable: Enable {
                pin: enable,
                on: None,
            },
            max_duty,
            mapping,
        }
    }
}

impl<P: SetDutyCycle, D: OutputPin, E: OutputPin> MotorDriver for PwmDirectionBridge<P, D, E> {
    fn drive(&mut self, volts: f32) -> Result<(), DriverError> {
        let (duty, forward) = self.mapping.duty(volts, self.max_duty);
        self.direction
            .set_state(PinState::from(forward))
            .map_err(|_| DriverError)?;
        self.pwm.set_duty_cycle(duty).map_err(|_| DriverError)?;
        self.enable.set(true)
    }

    fn disable(&mut self) -> Result<(), DriverError> {
        let duty = self.pwm.set_duty_cycle(0);
        let enable = self.enable.set(false);
        duty.map_err(|_| DriverError).and(enable)
    }
}

/// Two PWMs, one per bridge input: forward drives `a` with `b` at 0 %, reverse the opposite.
pub struct TwoPwmBridge<A, B, E = NoEnable> {
    a: A,
    b: B,
    enable: Enable<E>,
    max_duty: u16,
    mapping: DutyMapping,
}

impl<A: SetDutyCycle, B: SetDutyCycle, E: OutputPin> TwoPwmBridge<A, B, E> {
    /// Reads input A's full scale once (both PWMs must share it: one timer, two channels).
    pub fn new(a: A, b: B, enable: E, mapping: DutyMapping) -> Self {
        let max_duty = a.max_duty_cycle();
        TwoPwmBridge {
            a,
            b,
            enable: Enable {
                pin: enable,
                on: None,
            },
            max_duty,
            mapping,
        }
    }
}

impl<A: SetDutyCycle, B: SetDutyCycle, E: OutputPin> MotorDriver for TwoPwmBridge<A, B, E> {
    fn drive(&mut self, volts: f32) -> Result<(), DriverError> {
        let (duty, forward) = self.mapping.duty(volts, self.max_duty);
        // The input going idle is written first, so both are never driven at once.
        let (idle, active) = if forward {
            (
                &mut self.b as &mut dyn SetDutyCycleAny,
                &mut self.a as &mut dyn SetDutyCycleAny,
            )
        } else {
            (
                &mut self.a as &mut dyn SetDutyCycleAny,
                &mut self.b as &mut dyn SetDutyCycleAny,
            )
        };
        idle.set(0)?;
        active.set(duty)?;
        self.enable.set(true)
    }

    fn disable(&mut self) -> Result<(), DriverError> {
        let a = self.a.set_duty_cycle(0).map_err(|_| DriverError);
        let b = self.b.set_duty_cycle(0).map_err(|_| DriverError);
        let enable = self.enable.set(false);
        a.and(b).and(enable)
    }
}

/// A duty-cycle output with its error type erased (so the two inputs of a [`TwoPwmBridge`],
/// of different types, can be picked at run time).
trait SetDutyCycleAny {
    fn set(&mut self, duty: u16) -> Result<(), DriverError>;
}

impl<T: SetDutyCycle> SetDutyCycleAny for T {
    fn set(&mut self, duty: u16) -> Result<(), DriverError> {
        self.set_duty_cycle(duty).map_err(|_| DriverError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPPING: DutyMapping = DutyMapping {
        supply_voltage: 12.0,
        deadzone_voltage: 0.0,
        reversed: false,
    };

    #[test]
    fn duty_is_proportional_and_clamped() {
        assert_eq!(MAPPING.duty(6.0, 1000), (500, true));
        assert_eq!(MAPPING.duty(-3.0, 1000), (250, false));
        assert_eq!(MAPPING.duty(24.0, 1000), (1000, true));
        assert_eq!(MAPPING.duty(-99.0, 1000), (1000, false));
        assert_eq!(MAPPING.duty(0.0, 1000), (0, true));
        assert_eq!(MAPPING.duty(f32::NAN, 1000), (0, true));
    }

    #[test]
    fn deadzone_raises_every_non_zero_command() {
        let m = DutyMapping {
            deadzone_voltage: 1.2,
            ..MAPPING
        };
        assert_eq!(m.duty(0.0, 1000), (0, true));
        assert_eq!(m.duty(0.012, 1000), (101, true));
        assert_eq!(m.duty(-4.8, 1000), (500, false));
        assert_eq!(m.duty(11.0, 1000), (1000, true));
    }

    #[test]
    fn reversed_flips_the_direction_only() {
        let m = DutyMapping {
            reversed: true,
            ..MAPPING
        };
        assert_eq!(m.duty(6.0, 1000), (500, false));
        assert_eq!(m.duty(-6.0, 1000), (500, true));
    }

    #[test]
    fn validity() {
        assert!(MAPPING.is_valid());
        let bad = |supply, dz| {
            !DutyMapping {
                supply_voltage: supply,
                deadzone_voltage: dz,
                reversed: false,
            }
            .is_valid()
        };
        assert!(bad(0.0, 0.0));
        assert!(bad(12.0, 12.0));
        assert!(bad(12.0, -0.1));
        assert!(bad(f32::NAN, 0.0));
    }
}
