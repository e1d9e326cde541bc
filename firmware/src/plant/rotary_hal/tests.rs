//! The rotary plant against embedded-hal-mock's PWM and pins (every write checked, in
//! order) and, inside the real `Device`, against recording fakes.
extern crate std;

use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use embedded_hal::digital::{ErrorType, OutputPin};
use embedded_hal::pwm::{ErrorType as PwmErrorType, SetDutyCycle};
use embedded_hal_mock::eh1::MockError;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::pwm::{Mock as PwmMock, Transaction as PwmTx};

use super::*;
use crate::plant::{Action, Plant, PlantFault, Settling};
use crate::testkit::ManualClock;

/// An encoder whose count (or failure) the test sets.
#[derive(Clone, Default)]
struct FakeEncoder(Rc<RefCell<(i32, bool)>>);

impl FakeEncoder {
    fn set(&self, count: i32) {
        self.0.borrow_mut().0 = count;
    }
    fn fail(&self) {
        self.0.borrow_mut().1 = true;
    }
}

impl QuadratureEncoder for FakeEncoder {
    type Error = ();
    fn count(&mut self) -> Result<i32, ()> {
        let (count, fail) = *self.0.borrow();
        if fail { Err(()) } else { Ok(count) }
    }
}

type MockBridge = PwmDirectionBridge<PwmMock, PinMock, PinMock>;
type MockPlant = RotaryPendulum<MockBridge, FakeEncoder, FakeEncoder, PinMock, ManualClock>;

const PERIOD_US: u64 = 4_000;
const MAPPING: DutyMapping = DutyMapping {
    supply_voltage: 12.0,
    deadzone_voltage: 0.0,
    reversed: false,
};

struct MockRig {
    plant: MockPlant,
    pwm: PwmMock,
    direction: PinMock,
    enable: PinMock,
    switch: Option<PinMock>,
    arm: FakeEncoder,
    pendulum: FakeEncoder,
    clock: ManualClock,
}

impl MockRig {
    /// The plant over mocks expecting exactly these writes (after the construction's
    /// `max_duty_cycle` = 1000 and its safe state: duty 0, enable low).
    fn new(
        pwm: &[PwmTx],
        direction: &[PinTx],
        enable: &[PinTx],
        config: RotaryConfig,
        mapping: DutyMapping,
    ) -> Self {
        Self::with_switch(pwm, direction, enable, None, config, mapping)
    }

    fn with_switch(
        pwm: &[PwmTx],
        direction: &[PinTx],
        enable: &[PinTx],
        switch: Option<&[PinTx]>,
        config: RotaryConfig,
        mapping: DutyMapping,
    ) -> Self {
        let mut pwm_all = vec![PwmTx::max_duty_cycle(1000), PwmTx::set_duty_cycle(0)];
        pwm_all.extend_from_slice(pwm);
        let mut enable_all = vec![PinTx::set(State::Low)];
        enable_all.extend_from_slice(enable);
        let (pwm, direction, enable) = (
            PwmMock::new(&pwm_all),
            PinMock::new(direction),
            PinMock::new(&enable_all),
        );
        let switch = switch.map(PinMock::new);
        let (arm, pendulum, clock) = (
            FakeEncoder::default(),
            FakeEncoder::default(),
            ManualClock::default(),
        );
        let bridge =
            PwmDirectionBridge::new(pwm.clone(), direction.clone(), enable.clone(), mapping);
        let plant = RotaryPendulum::new(
            bridge,
            arm.clone(),
            pendulum.clone(),
            switch.clone(),
            clock.clone(),
            config,
        )
        .expect("valid config");
        MockRig {
            plant,
            pwm,
            direction,
            enable,
            switch,
            arm,
            pendulum,
            clock,
        }
    }

    /// Ticks `settle` a period at a time until it is no longer busy (at most 10 000 ticks).
    fn settle(&mut self) -> Settling {
        for _ in 0..10_000 {
            match self.plant.settle() {
                Settling::Busy => self.clock.advance(PERIOD_US),
                done => return done,
            }
        }
        Settling::Busy
    }

    fn observe(&mut self) -> [f32; 6] {
        let mut obs = [0.0; 6];
        self.plant.observe(&mut obs);
        obs
    }

    /// Every expected write happened, and nothing else.
    fn done(mut self) {
        self.pwm.done();
        self.direction.done();
        self.enable.done();
        if let Some(s) = self.switch.as_mut() {
            s.done();
        }
    }
}

fn fast_config() -> RotaryConfig {
    RotaryConfig {
        still_time_us: 20_000,
        ..RotaryConfig::qube_class()
    }
}

#[test]
fn duty_and_pin_writes_follow_the_action_with_clamping() {
    let pwm = [250, 500, 1000, 0, 0].map(PwmTx::set_duty_cycle);
    let direction = [
        State::High,
        State::Low,
        State::High,
        State::High,
        State::High,
    ]
    .map(PinTx::set);
    let enable = [PinTx::set(State::High)];
    let supply_6v = DutyMapping {
        supply_voltage: 6.0,
        ..MAPPING
    };
    let mut rig = MockRig::new(&pwm[..2], &direction[..2], &enable, fast_config(), MAPPING);
    assert_eq!(rig.settle(), Settling::Ready, "zeros taken while still");
    rig.observe();
    // 3 V of 12: 25 %, forward.
    let out = rig.plant.actuate(Action::Continuous(&[3.0]));
    assert!(!out.terminated);
    // -9 V is clamped to the plant's -6 V bound: 50 %, reverse.
    rig.plant.actuate(Action::Continuous(&[-9.0]));
    rig.done();

    // Past the supply the duty saturates; NaN and a discrete action become 0 V.
    let mut rig = MockRig::new(
        &pwm[2..],
        &direction[2..],
        &enable,
        fast_config(),
        supply_6v,
    );
    rig.settle();
    rig.observe();
    rig.plant.actuate(Action::Continuous(&[6.0]));
    rig.plant.actuate(Action::Continuous(&[f32::NAN]));
    rig.plant.actuate(Action::Discrete(1));
    rig.done();
}

#[test]
fn deadzone_compensation_adds_its_voltage() {
    let mapping = DutyMapping {
        deadzone_voltage: 1.2,
        ..MAPPING
    };
    let pwm = [101, 0, 600].map(PwmTx::set_duty_cycle);
    let direction = [State::High, State::High, State::Low].map(PinTx::set);
    let mut rig = MockRig::new(
        &pwm,
        &direction,
        &[PinTx::set(State::High)],
        fast_config(),
        mapping,
    );
    rig.settle();
    rig.observe();
    rig.plant.actuate(Action::Continuous(&[0.012])); // (0.012 + 1.2) / 12 -> 101
    rig.plant.actuate(Action::Continuous(&[0.0])); // exactly 0 stays 0
    rig.plant.actuate(Action::Continuous(&[-6.0])); // (6 + 1.2) / 12 -> 600
    rig.done();
}

#[test]
fn two_pwm_bridge_idles_the_other_input_first() {
    let a = PwmMock::new(&[
        PwmTx::max_duty_cycle(1000),
        PwmTx::set_duty_cycle(500),
        PwmTx::set_duty_cycle(0),
        PwmTx::set_duty_cycle(0),
    ]);
    let b = PwmMock::new(&[
        PwmTx::set_duty_cycle(0),
        PwmTx::set_duty_cycle(250),
        PwmTx::set_duty_cycle(0),
    ]);
    let enable = PinMock::new(&[PinTx::set(State::High), PinTx::set(State::Low)]);
    let mut bridge = TwoPwmBridge::new(a.clone(), b.clone(), enable.clone(), MAPPING);
    bridge.drive(6.0).unwrap();
    bridge.drive(-3.0).unwrap();
    bridge.disable().unwrap();
    for mut m in [a, b] {
        m.done();
    }
    let mut enable = enable;
    enable.done();
}

#[test]
fn zeros_make_hanging_pi_and_the_arm_centre_zero() {
    let config = RotaryConfig {
        max_pendulum_speed: 1e9,
        ..fast_config()
    };
    let mut rig = MockRig::new(&[], &[], &[], config, MAPPING);
    rig.arm.set(12_345);
    rig.pendulum.set(-777);
    assert_eq!(rig.settle(), Settling::Ready);
    assert_eq!(rig.plant.zeros(), Some((12_345, -777)));
    let obs = rig.observe();
    assert_eq!(obs[..2], [0.0, 1.0]);
    assert!(
        (obs[3] + 1.0).abs() < 1e-6,
        "cos(alpha) = -1 hanging: {obs:?}"
    );
    // A quarter turn of the pendulum's sensor (512 of 2048 counts) from hanging is horizontal.
    rig.clock.advance(PERIOD_US);
    rig.pendulum.set(-777 + 512);
    let [_, alpha, ..] = {
        rig.observe();
        rig.plant.measured()
    };
    assert!(
        (alpha + core::f32::consts::FRAC_PI_2).abs() < 1e-6,
        "{alpha}"
    );
    rig.done();
}

#[test]
fn arm_limit_turns_the_bridge_off_and_terminates() {
    let config = RotaryConfig {
        max_arm_speed: 1e9,
        ..fast_config()
    };
    // Drive once (duty 500, enable high), then the limit: duty 0 and enable low at the
    // observation, and a refused command writes 0 again.
    let pwm = [500, 0, 0].map(PwmTx::set_duty_cycle);
    let mut rig = MockRig::new(
        &pwm,
        &[PinTx::set(State::High)],
        &[PinTx::set(State::High), PinTx::set(State::Low)],
        config,
        MAPPING,
    );
    rig.settle();
    rig.observe();
    assert!(!rig.plant.actuate(Action::Continuous(&[6.0])).terminated);
    rig.clock.advance(PERIOD_US);
    rig.arm.set(769); // 135.2° of 2048 counts: past the 135° limit
    rig.observe();
    let out = rig.plant.actuate(Action::Continuous(&[6.0]));
    assert!(out.terminated);
    assert_eq!(
        rig.plant.fault(),
        None,
        "a limit is a termination, not a fault"
    );
    rig.done();
}

#[test]
fn over_speed_turns_the_bridge_off_and_terminates() {
    let config = RotaryConfig {
        max_arm_speed: 20.0,
        ..fast_config()
    };
    let pwm = [500, 0, 0].map(PwmTx::set_duty_cycle);
    let mut rig = MockRig::new(
        &pwm,
        &[PinTx::set(State::High)],
        &[PinTx::set(State::High), PinTx::set(State::Low)],
        config,
        MAPPING,
    );
    rig.settle();
    rig.observe();
    rig.plant.actuate(Action::Continuous(&[6.0]));
    rig.clock.advance(PERIOD_US);
    rig.arm.set(60); // 46 rad/s raw, 25 rad/s filtered: over 20
    rig.observe();
    assert!(rig.plant.measured()[2] > 20.0);
    assert!(rig.plant.actuate(Action::Discrete(0)).terminated);
    rig.done();
}

#[test]
fn limit_switch_edge_turns_the_bridge_off() {
    let pwm = [500, 0, 0].map(PwmTx::set_duty_cycle);
    // Active low: high (open) for the first observation, low (pressed) for the second.
    let switch = [PinTx::get(State::High), PinTx::get(State::Low)];
    let mut rig = MockRig::with_switch(
        &pwm,
        &[PinTx::set(State::High)],
        &[PinTx::set(State::High), PinTx::set(State::Low)],
        Some(&switch),
        fast_config(),
        MAPPING,
    );
    rig.settle();
    rig.observe();
    assert!(!rig.plant.actuate(Action::Continuous(&[6.0])).terminated);
    rig.clock.advance(PERIOD_US);
    rig.observe();
    assert!(rig.plant.actuate(Action::Continuous(&[6.0])).terminated);
    rig.done();
}

#[test]
fn sensor_failures_are_faults_not_panics() {
    for which in ["arm", "pendulum"] {
        // The fault's safe state, then the refused command's: duty 0 twice, enable already low.
        let pwm = [PwmTx::set_duty_cycle(0), PwmTx::set_duty_cycle(0)];
        let mut rig = MockRig::new(&pwm, &[], &[], fast_config(), MAPPING);
        rig.settle();
        let before = rig.observe();
        if which == "arm" {
            rig.arm.fail()
        } else {
            rig.pendulum.fail()
        }
        rig.clock.advance(PERIOD_US);
        let after = rig.observe();
        assert_eq!(
            before, after,
            "a failed read keeps the last (finite) observation"
        );
        let want = if which == "arm" {
            PlantFault::ArmSensor
        } else {
            PlantFault::PendulumSensor
        };
        assert_eq!(rig.plant.fault(), Some(want));
        // No voltage once faulted.
        assert!(rig.plant.actuate(Action::Continuous(&[3.0])).terminated);
        assert_eq!(rig.plant.settle(), Settling::Failed);
        rig.done();
    }
}

#[test]
fn limit_switch_read_failure_is_a_fault() {
    let switch =
        [PinTx::get(State::High).with_error(MockError::Io(std::io::ErrorKind::NotConnected))];
    let mut rig = MockRig::with_switch(
        &[PwmTx::set_duty_cycle(0)],
        &[],
        &[],
        Some(&switch),
        fast_config(),
        MAPPING,
    );
    rig.settle();
    rig.observe();
    assert_eq!(rig.plant.fault(), Some(PlantFault::LimitSwitch));
    rig.done();
}

#[test]
fn driver_write_failure_is_a_fault() {
    let pwm = [
        PwmTx::set_duty_cycle(250).with_error(MockError::Io(std::io::ErrorKind::Other)),
        PwmTx::set_duty_cycle(0),
    ];
    let mut rig = MockRig::new(
        &pwm,
        &[PinTx::set(State::High)],
        &[],
        fast_config(),
        MAPPING,
    );
    rig.settle();
    rig.observe();
    let out = rig.plant.actuate(Action::Continuous(&[3.0]));
    assert!(out.terminated);
    assert_eq!(rig.plant.fault(), Some(PlantFault::Actuator));
    rig.done();
}

#[test]
fn config_errors_are_reported() {
    let bad = RotaryConfig {
        arm_limit_rad: 4.0,
        ..RotaryConfig::qube_class()
    };
    assert_eq!(bad.check(), Err(RotaryConfigError::ArmLimit));
    let homing = RotaryConfig {
        arm_zero: ArmZero::AgainstLimit {
            volts: -1.0,
            centre_rad: 2.0,
        },
        ..RotaryConfig::qube_class()
    };
    assert_eq!(homing.check(), Ok(()));
    let bridge = PwmDirectionBridge::new(
        RecordingPwm::default(),
        RecordingPin::default(),
        NoEnable,
        MAPPING,
    );
    let no_switch: Option<NoLimitSwitch> = None;
    let made = RotaryPendulum::new(
        bridge,
        FakeEncoder::default(),
        FakeEncoder::default(),
        no_switch,
        ManualClock::default(),
        homing,
    );
    assert_eq!(made.err(), Some(RotaryConfigError::NoLimitSwitch));
}

// ----- recording fakes: what the motor was last told, for the longer runs below ---------

#[derive(Clone, Default)]
struct RecordingPwm(Rc<RefCell<Vec<u16>>>);

impl PwmErrorType for RecordingPwm {
    type Error = core::convert::Infallible;
}

impl SetDutyCycle for RecordingPwm {
    fn max_duty_cycle(&self) -> u16 {
        1000
    }
    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Self::Error> {
        self.0.borrow_mut().push(duty);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct RecordingPin(Rc<RefCell<Vec<bool>>>);

impl ErrorType for RecordingPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().push(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().push(true);
        Ok(())
    }
}

type RecordingPlant = RotaryPendulum<
    PwmDirectionBridge<RecordingPwm, RecordingPin, RecordingPin>,
    FakeEncoder,
    FakeEncoder,
    NoLimitSwitch,
    ManualClock,
>;

struct Recorded {
    plant: RecordingPlant,
    duty: RecordingPwm,
    direction: RecordingPin,
    enable: RecordingPin,
    arm: FakeEncoder,
    clock: ManualClock,
}

fn recorded(config: RotaryConfig) -> Recorded {
    let (duty, direction, enable) = (
        RecordingPwm::default(),
        RecordingPin::default(),
        RecordingPin::default(),
    );
    let (arm, clock) = (FakeEncoder::default(), ManualClock::default());
    let bridge = PwmDirectionBridge::new(duty.clone(), direction.clone(), enable.clone(), MAPPING);
    let plant = RotaryPendulum::new(
        bridge,
        arm.clone(),
        FakeEncoder::default(),
        None,
        clock.clone(),
        config,
    )
    .expect("valid");
    Recorded {
        plant,
        duty,
        direction,
        enable,
        arm,
        clock,
    }
}

#[test]
fn reset_centres_the_arm_then_reports_ready() {
    let mut r = recorded(fast_config());
    r.plant.reset(0);
    // Zeros first (arm at rest at its centre), then the arm is pushed off centre by hand.
    while r.plant.zeros().is_none() {
        assert_eq!(r.plant.settle(), Settling::Busy);
        r.clock.advance(PERIOD_US);
    }
    r.arm.set(100); // +17.6°: the centring drives it back (negative voltage)
    assert_eq!(r.plant.settle(), Settling::Busy);
    assert_eq!(
        r.direction.0.borrow().last(),
        Some(&false),
        "driving towards the centre"
    );
    assert!(*r.duty.0.borrow().last().unwrap() > 0);
    r.clock.advance(PERIOD_US);
    r.arm.set(3); // centred within 2°, then still
    let mut ticks = 0;
    while r.plant.settle() == Settling::Busy {
        r.clock.advance(PERIOD_US);
        ticks += 1;
        assert!(ticks < 100, "never ready");
    }
    assert_eq!(
        r.duty.0.borrow().last(),
        Some(&0),
        "bridge off at the start"
    );
    assert_eq!(r.enable.0.borrow().last(), Some(&false));
    assert_eq!(
        r.plant.measured()[2..],
        [0.0, 0.0],
        "velocity estimate restarts"
    );
}

#[test]
fn reset_that_never_centres_ends_as_a_fault() {
    let mut r = recorded(RotaryConfig {
        reset_timeout_us: 1_000_000,
        ..fast_config()
    });
    assert_eq!(r.plant.settle(), Settling::Busy);
    r.clock.advance(100_000);
    assert_eq!(r.plant.settle(), Settling::Ready, "zeros taken");
    r.arm.set(300); // stuck off centre: the arm does not follow the motor
    r.plant.reset(1);
    let mut state = Settling::Busy;
    for _ in 0..400 {
        state = r.plant.settle();
        if state != Settling::Busy {
            break;
        }
        r.clock.advance(PERIOD_US);
    }
    assert_eq!(state, Settling::Failed);
    assert_eq!(r.plant.fault(), Some(PlantFault::ResetTimeout));
    assert_eq!(r.duty.0.borrow().last(), Some(&0));
    assert_eq!(r.enable.0.borrow().last(), Some(&false));
}

#[test]
fn zeroing_needs_stillness_within_its_time_limit() {
    let mut r = recorded(RotaryConfig {
        zeroing_timeout_us: 200_000,
        ..fast_config()
    });
    let mut state = Settling::Busy;
    for i in 0..200 {
        r.arm.set(i * 5); // never still
        state = r.plant.settle();
        if state != Settling::Busy {
            break;
        }
        r.clock.advance(PERIOD_US);
    }
    assert_eq!(state, Settling::Failed);
    assert_eq!(r.plant.fault(), Some(PlantFault::ZeroingTimeout));
}

#[path = "device_tests.rs"]
mod device_tests;
