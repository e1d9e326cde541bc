//! The standalone run against the runtime's test doubles.
extern crate std;

use std::vec::Vec;

use tether_shared::message::{DeviceState, EpisodeEnd, HostMessage, RunCommand};
use tether_shared::{DeviceMessage, PROTOCOL_VERSION, PolicySpec};

use postcard::experimental::max_size::MaxSize;

use super::*;
use crate::device::DeviceConfig;
use crate::testkit::*;

type TapDevice = Device<Integrator, EpisodeTap<LoopLink>, ManualClock, 512>;

fn encode(spec: &PolicySpec) -> Vec<u8> {
    let mut buf = [0u8; PolicySpec::POSTCARD_MAX_SIZE];
    postcard::to_slice(spec, &mut buf)
        .expect("spec encodes")
        .to_vec()
}

fn policy() -> (Vec<u8>, &'static [f32]) {
    let spec = PolicySpec::for_plant(&Integrator::new(false).description(), &[8], true);
    let params = params_for(&spec, 9, -1.0);
    let spec_bytes = encode(&spec);
    (spec_bytes, Vec::leak(params))
}

fn device() -> (TapDevice, TestHost, ManualClock) {
    let (host, link) = loopback(1 << 20);
    let clock = ManualClock::default();
    let dev = Device::new(
        Integrator::new(false),
        EpisodeTap::new(link),
        clock.clone(),
        DeviceConfig::default(),
    );
    (dev, host, clock)
}

fn poll_periods(dev: &mut TapDevice, clock: &ManualClock, standalone: &mut Standalone, n: u32) {
    for _ in 0..n {
        dev.poll();
        standalone.after_poll(dev);
        clock.advance(10_000);
    }
}

/// With no host: the built-in policy runs its episodes, the watchdog stays quiet, and the
/// returns are those a host's deterministic run of the same policy and seed reports.
#[test]
fn built_in_policy_runs_alone_and_matches_a_host_run() {
    let (spec_bytes, params) = policy();
    let built_in = BuiltInPolicy {
        spec_postcard: Vec::leak(spec_bytes),
        params,
    };
    let (mut dev, _host, clock) = device();
    let mut standalone = Standalone::boot(&mut dev, &built_in, 3, 77, 2_000_000).expect("boots");
    poll_periods(&mut dev, &clock, &mut standalone, 400);
    assert_eq!(
        dev.state(),
        DeviceState::Idle,
        "three episodes done, no watchdog fault"
    );
    let tapped: Vec<EpisodeSummary> =
        core::iter::from_fn(|| dev.link_io_mut().take_end()).collect();
    assert_eq!(tapped.len(), 3);

    // The same through a host.
    let (mut reference, mut host, clock) = device();
    let spec: PolicySpec = postcard::from_bytes(built_in.spec_postcard).unwrap();
    for m in upload_messages(5, &spec, params) {
        host.send(&m);
        reference.poll();
    }
    host.send(&HostMessage::Run(RunCommand {
        first_episode: 0,
        episodes: 3,
        seed: 77,
        mode: RunMode::Deterministic,
    }));
    let mut ends: Vec<EpisodeEnd> = Vec::new();
    for i in 0..400 {
        host.send(&HostMessage::Heartbeat { sequence: i });
        reference.poll();
        clock.advance(10_000);
        ends.extend(host.receive().into_iter().filter_map(|m| match m {
            DeviceMessage::EpisodeEnd(e) => Some(e),
            _ => None,
        }));
    }
    assert_eq!(ends.len(), 3);
    for (t, e) in tapped.iter().zip(&ends) {
        assert_eq!(
            (t.episode, t.length, t.reason),
            (e.episode, e.length, e.reason)
        );
        assert_eq!(t.episode_return.to_bits(), e.episode_return.to_bits());
    }
}

/// With no host to release it, nothing sent is kept for resending: the ring neither evicts
/// nor holds a free-running board's clock (which waits while `awaiting_release`).
#[test]
fn a_standalone_run_keeps_nothing_for_resending() {
    let (spec_bytes, params) = policy();
    let built_in = BuiltInPolicy {
        spec_postcard: Vec::leak(spec_bytes),
        params,
    };
    let (mut dev, _host, clock) = device();
    let mut standalone = Standalone::boot(&mut dev, &built_in, 0, 3, 2_000_000).expect("boots");
    for _ in 0..2_000 {
        poll_periods(&mut dev, &clock, &mut standalone, 1);
        assert!(!dev.awaiting_release());
    }
    let tapped = core::iter::from_fn(|| dev.link_io_mut().take_end()).count();
    assert!(tapped > 0, "episodes ended");
    assert!(dev.stats().steps > 1_500, "{:?}", dev.stats());
    assert_eq!(dev.retransmit_stats().evicted, 0);
}

/// A host that speaks ends the standalone run and gets the usual device, watchdog on.
#[test]
fn a_host_takes_over() {
    let (spec_bytes, params) = policy();
    let built_in = BuiltInPolicy {
        spec_postcard: Vec::leak(spec_bytes),
        params,
    };
    let (mut dev, mut host, clock) = device();
    let mut standalone = Standalone::boot(&mut dev, &built_in, 0, 1, 100_000).expect("boots");
    poll_periods(&mut dev, &clock, &mut standalone, 20);
    assert_eq!(dev.state(), DeviceState::Running);
    host.send(&HostMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
    });
    poll_periods(&mut dev, &clock, &mut standalone, 1);
    assert!(standalone.host_arrived());
    assert_eq!(dev.state(), DeviceState::Idle, "the built-in run stopped");
    assert!(host.receive().iter().any(
        |m| matches!(m, DeviceMessage::Hello(i) if i.active_policy == Some(BUILT_IN_VERSION))
    ));
    // The host starts a run and falls silent: the restored 100 ms watchdog fires.
    host.send(&HostMessage::Run(RunCommand {
        first_episode: 0,
        episodes: 0,
        seed: 1,
        mode: RunMode::Deterministic,
    }));
    poll_periods(&mut dev, &clock, &mut standalone, 30);
    assert_eq!(dev.state(), DeviceState::SafeStop);
    assert_eq!(dev.stats().watchdog_fired, 1);
}

#[test]
fn unusable_policies_are_refused() {
    let (mut dev, _host, _clock) = device();
    let bad = BuiltInPolicy {
        spec_postcard: &[0xFF, 0xFF],
        params: &[],
    };
    assert_eq!(
        Standalone::boot(&mut dev, &bad, 1, 0, 0).err(),
        Some(DeployError::BadSpec)
    );
    // A policy for a plant with another observation size.
    let other = PolicySpec::for_plant(&crate::plant::Pendulum::new().description(), &[4], false);
    let params = params_for(&other, 1, 0.0);
    let spec_bytes = encode(&other);
    let wrong = BuiltInPolicy {
        spec_postcard: Vec::leak(spec_bytes),
        params: Vec::leak(params),
    };
    assert_eq!(
        Standalone::boot(&mut dev, &wrong, 1, 0, 0).err(),
        Some(DeployError::Refused)
    );
}
