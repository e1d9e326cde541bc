//! The rotary plant inside the real runtime: the watchdog and a failing sensor reach the
//! motor, and the host hears why.
use tether_shared::message::{DeviceState, EpisodeEndReason, HostMessage, RunCommand, RunMode};
use tether_shared::{DeviceMessage, PolicySpec};

use super::*;
use crate::device::{Device, DeviceConfig};
use crate::testkit::{LoopLink, TestHost, loopback, params_for, upload_messages};

type RigDevice = Device<RecordingPlant, LoopLink, ManualClock, 6_000>;

/// A running rig: policy uploaded, a run of many episodes started, the reset's centring
/// done and a few steps taken with heartbeats from the host.
fn running_rig() -> (
    RigDevice,
    TestHost,
    FakeEncoder,
    RecordingPwm,
    RecordingPin,
    ManualClock,
) {
    let r = recorded(fast_config());
    let (duty, enable, arm, clock) = (
        r.duty.clone(),
        r.enable.clone(),
        r.arm.clone(),
        r.clock.clone(),
    );
    let spec = PolicySpec::for_plant(&r.plant.description(), &[8], false);
    // Large log-std: the sampled voltages are far from zero, so the motor is driven.
    let params = params_for(&spec, 3, 1.0);
    let (mut host, link) = loopback(1 << 20);
    let config = DeviceConfig {
        watchdog_timeout_us: 100_000,
        ..DeviceConfig::default()
    };
    let mut dev = Device::new(r.plant, link, clock.clone(), config);
    for m in upload_messages(1, &spec, &params) {
        host.send(&m);
        dev.poll();
    }
    host.send(&HostMessage::Run(RunCommand {
        first_episode: 0,
        episodes: 0,
        seed: 5,
        mode: RunMode::Explore,
    }));
    for i in 0..40 {
        host.send(&HostMessage::Heartbeat { sequence: i });
        dev.poll();
        clock.advance(PERIOD_US);
    }
    assert_eq!(dev.state(), DeviceState::Running);
    assert!(
        dev.stats().steps > 10,
        "centred and stepping: {:?}",
        dev.stats()
    );
    let _ = host.receive();
    (dev, host, arm, duty, enable, clock)
}

#[test]
fn watchdog_expiry_reaches_the_bridge() {
    let (mut dev, mut host, _arm, duty, enable, clock) = running_rig();
    assert!(
        duty.0.borrow().iter().rev().take(5).any(|&d| d > 0),
        "motor driven while running"
    );
    assert_eq!(enable.0.borrow().last(), Some(&true));
    // The host falls silent past the 100 ms watchdog.
    for _ in 0..40 {
        dev.poll();
        clock.advance(PERIOD_US);
    }
    assert_eq!(dev.state(), DeviceState::SafeStop);
    assert_eq!(dev.stats().watchdog_fired, 1);
    assert_eq!(duty.0.borrow().last(), Some(&0));
    assert_eq!(enable.0.borrow().last(), Some(&false));
    let ends: Vec<_> = host
        .receive()
        .into_iter()
        .filter_map(|m| match m {
            DeviceMessage::EpisodeEnd(e) => Some(e.reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [EpisodeEndReason::Fault]);
}

#[test]
fn sensor_failure_in_a_run_is_a_fault_the_host_hears_about() {
    let (mut dev, mut host, arm, duty, enable, clock) = running_rig();
    arm.fail();
    host.send(&HostMessage::Heartbeat { sequence: 99 });
    dev.poll();
    clock.advance(PERIOD_US);
    dev.poll();
    assert_eq!(dev.state(), DeviceState::SafeStop);
    assert_eq!(dev.plant().fault(), Some(PlantFault::ArmSensor));
    assert_eq!(duty.0.borrow().last(), Some(&0));
    assert_eq!(enable.0.borrow().last(), Some(&false));
    let said = host.receive();
    assert!(
        said.iter().any(
            |m| matches!(m, DeviceMessage::EpisodeEnd(e) if e.reason == EpisodeEndReason::Fault)
        )
    );
    assert!(said.iter().any(
        |m| matches!(m, DeviceMessage::Log(l) if l.text.as_str() == PlantFault::ArmSensor.as_str())
    ));
    // A new run starts but cannot take a step: the fault is latched.
    let steps = dev.stats().steps;
    host.send(&HostMessage::Run(RunCommand {
        first_episode: 0,
        episodes: 1,
        seed: 1,
        mode: RunMode::Explore,
    }));
    for _ in 0..5 {
        dev.poll();
        clock.advance(PERIOD_US);
    }
    assert_eq!(dev.state(), DeviceState::SafeStop);
    assert_eq!(dev.stats().steps, steps, "no step after the fault");
}
