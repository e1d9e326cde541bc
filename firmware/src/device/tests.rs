//! Whole-runtime tests against the test doubles in `crate::testkit`.
extern crate std;

use std::vec::Vec;

use proptest::prelude::*;
use tether_shared::message::{
    AckTopic, DeviceState, EpisodeEnd, EpisodeEndReason, HostMessage, PolicyBegin, PolicyChunk,
    RefusalReason, RunCommand, RunMode, TransitionBatch, params_crc,
};
use tether_shared::policy::PolicyView;
use tether_shared::{DeviceMessage, PROTOCOL_VERSION, PolicySpec};

use super::*;
use crate::testkit::*;
use tether_shared::policy::gaussian_log_prob;

pub(super) const CAP: usize = 512;
/// A device with room for `NOISE` gSDE noise-matrix values.
pub(super) type TestDevice<const NOISE: usize> =
    Device<Integrator, LoopLink, ManualClock, CAP, NOISE>;

pub(super) struct Rig<const NOISE: usize = DEFAULT_NOISE_CAPACITY> {
    pub(super) dev: TestDevice<NOISE>,
    pub(super) host: TestHost,
    pub(super) clock: ManualClock,
}

impl Rig {
    pub(super) fn new(plant: Integrator) -> Self {
        Self::with(plant, 1 << 20, DeviceConfig::default())
    }

    pub(super) fn with(plant: Integrator, host_capacity: usize, config: DeviceConfig) -> Self {
        Rig::with_noise_capacity(plant, host_capacity, config)
    }
}

impl<const NOISE: usize> Rig<NOISE> {
    fn with_noise_capacity(plant: Integrator, host_capacity: usize, config: DeviceConfig) -> Self {
        let (host, link) = loopback(host_capacity);
        let clock = ManualClock::default();
        let dev = Device::new(plant, link, clock.clone(), config);
        Rig { dev, host, clock }
    }

    /// Says hello; the device's description and everything it said.
    fn hello(&mut self) -> (tether_shared::message::DeviceInfo, Vec<DeviceMessage>) {
        let msgs = self.exchange(&HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        });
        let info = msgs
            .iter()
            .find_map(|m| match m {
                DeviceMessage::Hello(info) => Some(info.clone()),
                _ => None,
            })
            .expect("hello answered");
        (info, msgs)
    }

    /// Sends `m`, polls, returns everything the device said.
    pub(super) fn exchange(&mut self, m: &HostMessage) -> Vec<DeviceMessage> {
        self.host.send(m);
        self.dev.poll();
        self.host.receive()
    }

    pub(super) fn upload(
        &mut self,
        version: u32,
        spec: &PolicySpec,
        params: &[f32],
    ) -> Vec<DeviceMessage> {
        let mut out = Vec::new();
        for m in upload_messages(version, spec, params) {
            out.extend(self.exchange(&m));
        }
        out
    }

    /// Advances one control period at a time, feeding heartbeats, until `done` or `max`
    /// periods; returns everything received.
    pub(super) fn run_for(&mut self, periods: u32) -> Vec<DeviceMessage> {
        let mut out = Vec::new();
        for i in 0..periods {
            self.host.send(&HostMessage::Heartbeat { sequence: i });
            self.dev.poll();
            out.extend(self.host.receive());
            self.clock.advance(self.dev.period_us());
        }
        self.dev.poll();
        out.extend(self.host.receive());
        out
    }
}

pub(super) fn spec(discrete: bool) -> PolicySpec {
    PolicySpec::for_plant(&Integrator::new(discrete).description(), &[8, 8], true)
}

pub(super) fn run(episodes: u32, mode: RunMode, seed: u64) -> HostMessage {
    HostMessage::Run(RunCommand {
        first_episode: 10,
        episodes,
        seed,
        mode,
    })
}

pub(super) fn batches(msgs: &[DeviceMessage]) -> Vec<&TransitionBatch> {
    msgs.iter()
        .filter_map(|m| match m {
            DeviceMessage::Transitions(b) => Some(b),
            _ => None,
        })
        .collect()
}

pub(super) fn ends(msgs: &[DeviceMessage]) -> Vec<&EpisodeEnd> {
    msgs.iter()
        .filter_map(|m| match m {
            DeviceMessage::EpisodeEnd(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub(super) fn refusals(msgs: &[DeviceMessage]) -> Vec<RefusalReason> {
    msgs.iter()
        .filter_map(|m| match m {
            DeviceMessage::Refused(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

/// Records of one episode: (obs, action, reward, log_prob), checking contiguity.
pub(super) fn records(batches: &[&TransitionBatch], episode: u32, width: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::new();
    for b in batches.iter().filter(|b| b.episode == episode) {
        assert_eq!(b.first_step as usize, out.len(), "gap or overlap in steps");
        assert_eq!(b.values.len() % width, 0);
        out.extend(b.values.chunks(width).map(|c| c.to_vec()));
    }
    out
}

#[test]
fn handshake_describes_device() {
    let mut rig = Rig::new(Integrator::new(false));
    let (info, msgs) = rig.hello();
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    assert_eq!(info.plant, Integrator::new(false).description());
    assert_eq!(info.policy_capacity, CAP as u32);
    assert_eq!(info.active_policy, None);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, DeviceMessage::Heartbeat(_)))
    );
}

#[test]
fn upload_is_acknowledged_step_by_step() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    let p = params_for(&s, 1, -1.0);
    let msgs = rig.upload(7, &s, &p);
    let acks: Vec<AckTopic> = msgs
        .iter()
        .filter_map(|m| match m {
            DeviceMessage::Ack(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(acks.first(), Some(&AckTopic::PolicyBegin { version: 7 }));
    assert!(acks.contains(&AckTopic::PolicyChunk {
        version: 7,
        received: p.len() as u32
    }));
    assert_eq!(acks.last(), Some(&AckTopic::PolicyCommit { version: 7 }));
    assert_eq!(rig.dev.active_policy(), Some(7), "idle: swapped at once");
}

#[test]
fn run_without_policy_is_refused() {
    let mut rig = Rig::new(Integrator::new(false));
    let msgs = rig.exchange(&run(1, RunMode::Explore, 0));
    assert_eq!(refusals(&msgs), [RefusalReason::NoPolicy]);
    assert_eq!(rig.dev.state(), DeviceState::Idle);
}

#[test]
fn deterministic_episode_matches_shared_forward_pass() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    let p = params_for(&s, 2, -1.0);
    rig.upload(1, &s, &p);
    let mut msgs = rig.exchange(&run(1, RunMode::Deterministic, 5));
    assert!(msgs.contains(&DeviceMessage::Ack(AckTopic::Run)));
    msgs.extend(rig.run_for(60));
    let end = ends(&msgs)[0].clone();
    assert_eq!(end.reason, EpisodeEndReason::Truncated);
    assert_eq!(end.length, 50);
    assert_eq!(end.episode, 10);
    let recs = records(&batches(&msgs), 10, 5);
    assert_eq!(recs.len(), 50);
    let view = PolicyView::new(&s, &p).unwrap();
    let mut scratch = [0.0; 64];
    let mut ret = 0.0;
    for (r, applied) in recs.iter().zip(&rig.dev.plant().applied) {
        let mut mean = [0.0f32; 1];
        view.forward(&r[..2], &mut scratch, &mut mean).unwrap();
        assert_eq!(r[2], mean[0], "the record keeps the policy's action");
        assert_eq!(
            *applied,
            mean[0].clamp(-1.0, 1.0),
            "the plant gets it clamped"
        );
        assert_eq!(r[4], 0.0, "deterministic log-prob is 0");
        ret += r[3];
    }
    assert!((end.episode_return - ret).abs() < 1e-5);
    assert_eq!(end.final_obs.as_slice(), &[rig.dev.plant().x, 1.0]);
    assert_eq!(rig.dev.state(), DeviceState::Idle);
    assert!(rig.dev.plant().safe);
}

#[test]
fn exploration_log_probs_match_closed_form_gaussian() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    let p = params_for(&s, 3, -1.5);
    rig.upload(1, &s, &p);
    rig.exchange(&run(1, RunMode::Explore, 9));
    let msgs = rig.run_for(60);
    let recs = records(&batches(&msgs), 10, 5);
    let view = PolicyView::new(&s, &p).unwrap();
    let mut scratch = [0.0; 64];
    let mut checked = 0;
    for r in &recs {
        let mut mean = [0.0f32; 1];
        view.forward(&r[..2], &mut scratch, &mut mean).unwrap();
        let sigma = (-1.5f64).exp();
        {
            let z = (r[2] as f64 - mean[0] as f64) / sigma;
            let expected = -0.5 * z * z - sigma.ln() - 0.5 * (2.0 * core::f64::consts::PI).ln();
            assert!(
                (r[4] as f64 - expected).abs() < 1e-4,
                "{} vs {expected}",
                r[4]
            );
            assert_eq!(
                r[4],
                gaussian_log_prob(&mean, &[-1.5], &r[2..3]),
                "device uses the documented formula"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 50, "every sampled (unclamped) action checked");
    let noise: Vec<f32> = recs.iter().map(|r| r[4]).collect();
    assert!(
        noise.windows(2).any(|w| w[0] != w[1]),
        "actions are sampled"
    );
}

#[test]
fn categorical_episode_reports_log_softmax_and_argmax() {
    let mut rig = Rig::new(Integrator::new(true));
    let s = spec(true);
    let p = params_for(&s, 4, 0.0);
    rig.upload(1, &s, &p);
    rig.exchange(&run(2, RunMode::Explore, 1));
    let msgs = rig.run_for(120);
    let view = PolicyView::new(&s, &p).unwrap();
    let mut scratch = [0.0; 64];
    for r in records(&batches(&msgs), 10, 5) {
        let mut logits = [0.0f32; 3];
        view.forward(&r[..2], &mut scratch, &mut logits).unwrap();
        let lse = logits.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
        let k = r[2] as usize;
        assert!(k < 3);
        assert!((r[4] as f64 - (logits[k] as f64 - lse)).abs() < 1e-5);
    }
    assert_eq!(ends(&msgs).len(), 2);

    rig.exchange(&run(1, RunMode::Deterministic, 1));
    let msgs = rig.run_for(60);
    for r in records(&batches(&msgs), 10, 5) {
        let mut logits = [0.0f32; 3];
        view.forward(&r[..2], &mut scratch, &mut logits).unwrap();
        assert_eq!(Some(r[2] as usize), argmax(&logits));
    }
}

#[test]
fn same_seed_reproduces_and_episodes_get_distinct_seeds() {
    let collect = || {
        let mut rig = Rig::new(Integrator::new(false));
        let s = spec(false);
        rig.upload(1, &s, &params_for(&s, 5, -1.0));
        rig.exchange(&run(2, RunMode::Explore, 77));
        let msgs = rig.run_for(120);
        (
            batches(&msgs).into_iter().cloned().collect::<Vec<_>>(),
            rig.dev.plant().resets.clone(),
        )
    };
    let (a, resets) = collect();
    let (b, _) = collect();
    assert_eq!(a, b);
    assert_eq!(resets.len(), 2);
    assert_ne!(resets[0], resets[1]);
}

/// Before each episode's reset the plant draws its variation from the episode's own
/// seed (`EpisodeStream::PlantVariation`).
#[test]
fn every_episode_varies_the_plant_before_its_reset() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 5, -1.0));
    rig.exchange(&run(2, RunMode::Explore, 77));
    rig.run_for(120);
    let expected: Vec<(u64, usize)> = (0..2)
        .map(|k| {
            let seed = episode_seed(77, 10 + k, EpisodeStream::PlantVariation);
            (seed, k as usize)
        })
        .collect();
    assert_eq!(rig.dev.plant().varied, expected);
    assert_eq!(rig.dev.plant().resets.len(), 2);
}

/// A plant that takes no parameters (physical hardware) refuses them, naming the reason,
/// and keeps running its policy.
#[test]
fn a_physical_plant_refuses_parameters() {
    let mut rig = Rig::new(Integrator::new(false));
    let mut params = tether_shared::message::PlantParams::default();
    let mass = tether_shared::message::ParamSetting::new("mass", Some(2.0), None).unwrap();
    params.settings.push(mass).unwrap();
    let msgs = rig.exchange(&HostMessage::PlantParams(params));
    assert!(
        msgs.contains(&DeviceMessage::Refused(tether_shared::message::Refusal {
            topic: AckTopic::PlantParams { count: 0 },
            reason: RefusalReason::FixedPhysics,
        })),
        "{msgs:?}"
    );
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 5, -1.0));
    let msgs = rig.exchange(&run(1, RunMode::Explore, 1));
    assert!(
        msgs.contains(&DeviceMessage::Ack(AckTopic::Run)),
        "{msgs:?}"
    );
}

#[test]
fn new_policy_waits_for_episode_boundary() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 6, -1.0));
    rig.exchange(&run(2, RunMode::Deterministic, 0));
    let mut msgs = rig.run_for(10);
    // Mid-episode upload of version 2.
    let acks = rig.upload(2, &s, &params_for(&s, 7, -1.0));
    assert!(acks.contains(&DeviceMessage::Ack(AckTopic::PolicyCommit { version: 2 })));
    assert_eq!(rig.dev.active_policy(), Some(1));
    msgs.extend(acks);
    msgs.extend(rig.run_for(120));
    let e = ends(&msgs);
    assert_eq!((e[0].policy_version, e[1].policy_version), (1, 2));
    for b in batches(&msgs) {
        let expected = if b.episode == 10 { 1 } else { 2 };
        assert_eq!(b.policy_version, expected);
    }
}

#[test]
fn refused_uploads_name_the_reason_and_keep_the_running_policy() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    let good = params_for(&s, 8, -1.0);
    rig.upload(1, &s, &good);
    let begin = |version, spec: &PolicySpec, len, crc| {
        HostMessage::PolicyBegin(PolicyBegin {
            version,
            spec: spec.clone(),
            len,
            crc,
        })
    };
    let n = good.len() as u32;

    // Wrong CRC.
    let mut msgs = Vec::new();
    for m in upload_messages(2, &s, &good) {
        let m = match m {
            HostMessage::PolicyBegin(mut b) => {
                b.crc ^= 1;
                HostMessage::PolicyBegin(b)
            }
            other => other,
        };
        msgs.extend(rig.exchange(&m));
    }
    assert_eq!(refusals(&msgs), [RefusalReason::BadCrc]);

    // Wrong length, over capacity, plant mismatch, bad spec.
    let cases = [
        (begin(3, &s, n + 1, 0), RefusalReason::LengthMismatch),
        (
            begin(
                4,
                &PolicySpec::for_plant(&Integrator::new(false).description(), &[64, 64], false),
                0,
                0,
            ),
            RefusalReason::OverCapacity,
        ),
        (begin(5, &spec(true), n, 0), RefusalReason::PlantMismatch),
        (
            begin(
                6,
                &PolicySpec::for_plant(&Integrator::new(false).description(), &[0], false),
                0,
                0,
            ),
            RefusalReason::BadSpec,
        ),
    ];
    for (m, reason) in cases {
        assert_eq!(refusals(&rig.exchange(&m)), [reason]);
    }

    // NaN weight and out-of-range log-std.
    let mut nan = good.clone();
    nan[3] = f32::NAN;
    assert_eq!(
        refusals(&rig.upload(7, &s, &nan)),
        [RefusalReason::NonFinite]
    );
    let mut wide = good.clone();
    *wide.last_mut().unwrap() = 25.0;
    assert_eq!(
        refusals(&rig.upload(8, &s, &wide)),
        [RefusalReason::NonFinite]
    );

    // A chunk after a gap is taken (selective repeat), but the commit before the gap is
    // filled is incomplete; then chunks of the abandoned upload are out of order.
    rig.exchange(&begin(9, &s, n, params_crc(&good)));
    let skip = HostMessage::PolicyChunk(PolicyChunk {
        version: 9,
        offset: 5,
        values: heapless::Vec::from_slice(&good[5..10]).unwrap(),
    });
    let acked = |msgs: &[DeviceMessage], version, received| {
        msgs.iter()
            .any(|m| *m == DeviceMessage::Ack(AckTopic::PolicyChunk { version, received }))
    };
    assert!(
        acked(&rig.exchange(&skip), 9, 10),
        "acknowledged with its end"
    );
    assert_eq!(
        refusals(&rig.exchange(&HostMessage::PolicyCommit { version: 9 })),
        [RefusalReason::Incomplete]
    );
    assert_eq!(refusals(&rig.exchange(&skip)), [RefusalReason::OutOfOrder]);
    assert_eq!(
        refusals(&rig.exchange(&HostMessage::PolicyCommit { version: 9 })),
        [RefusalReason::OutOfOrder]
    );

    // A chunk resent (its acknowledgement lost) is acknowledged again, and so is a part of
    // it; one past the declared length is refused.
    rig.exchange(&begin(10, &s, n, params_crc(&good)));
    let first = HostMessage::PolicyChunk(PolicyChunk {
        version: 10,
        offset: 0,
        values: heapless::Vec::from_slice(&good[..5]).unwrap(),
    });
    assert!(acked(&rig.exchange(&first), 10, 5));
    assert!(
        acked(&rig.exchange(&first), 10, 5),
        "a resent chunk is acknowledged"
    );
    let part = HostMessage::PolicyChunk(PolicyChunk {
        version: 10,
        offset: 0,
        values: heapless::Vec::from_slice(&good[..3]).unwrap(),
    });
    assert!(acked(&rig.exchange(&part), 10, 3));
    let past = HostMessage::PolicyChunk(PolicyChunk {
        version: 10,
        offset: n - 2,
        values: heapless::Vec::from_slice(&good[..5]).unwrap(),
    });
    assert_eq!(
        refusals(&rig.exchange(&past)),
        [RefusalReason::LengthMismatch]
    );

    // The first policy still runs, unchanged.
    assert_eq!(rig.dev.active_policy(), Some(1));
    rig.exchange(&run(1, RunMode::Deterministic, 0));
    let msgs = rig.run_for(60);
    let view = PolicyView::new(&s, &good).unwrap();
    let mut scratch = [0.0; 64];
    for r in records(&batches(&msgs), 10, 5) {
        let mut mean = [0.0f32; 1];
        view.forward(&r[..2], &mut scratch, &mut mean).unwrap();
        assert_eq!(r[2], mean[0]);
    }
}

#[test]
fn stalled_link_ends_episode_as_overrun_without_blocking() {
    let mut plant = Integrator::new(false);
    plant.episode_steps = 500; // far more records than the outgoing queue holds
    let mut rig = Rig::with(plant, 1 << 20, DeviceConfig::default());
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 9, -1.0));
    rig.exchange(&run(1, RunMode::Explore, 0));
    rig.host.wire.borrow_mut().host_capacity = 0; // the link stalls
    let mut msgs = rig.run_for(600);
    assert!(rig.dev.tx_pending() > 0);
    rig.host.wire.borrow_mut().host_capacity = 1 << 20;
    msgs.extend(rig.run_for(2));
    let e = ends(&msgs);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, EpisodeEndReason::Overrun);
    assert!(
        e[0].length < 500,
        "ended early, at the first batch that did not fit"
    );
}

#[test]
fn non_finite_observation_faults_into_safe_stop() {
    let mut plant = Integrator::new(false);
    plant.nan_from_step = Some(5);
    let mut rig = Rig::new(plant);
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 10, -1.0));
    rig.exchange(&run(0, RunMode::Explore, 0));
    let msgs = rig.run_for(20);
    let e = ends(&msgs);
    assert_eq!(e[0].reason, EpisodeEndReason::Fault);
    assert_eq!(e[0].length, 5);
    assert_eq!(rig.dev.state(), DeviceState::SafeStop);
    assert!(rig.dev.plant().safe);
    assert_eq!(
        rig.dev.plant().applied.len(),
        5,
        "no action after the fault"
    );
    // Run recovers from safe stop.
    rig.dev.plant_mut().nan_from_step = None;
    let msgs = rig.exchange(&run(1, RunMode::Explore, 0));
    assert!(msgs.contains(&DeviceMessage::Ack(AckTopic::Run)));
    assert_eq!(rig.dev.state(), DeviceState::Running);
}

#[test]
fn watchdog_puts_plant_in_safe_state() {
    let config = DeviceConfig {
        watchdog_timeout_us: 50_000,
        heartbeat_period_us: 500_000,
        action_rate_limit: None,
    };
    let mut rig = Rig::with(Integrator::new(false), 1 << 20, config);
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 11, -1.0));
    rig.exchange(&run(0, RunMode::Explore, 0));
    let mut msgs = Vec::new();
    for _ in 0..10 {
        rig.clock.advance(10_000);
        rig.dev.poll();
        msgs.extend(rig.host.receive());
    }
    assert_eq!(rig.dev.state(), DeviceState::SafeStop);
    assert_eq!(rig.dev.stats().watchdog_fired, 1);
    assert_eq!(ends(&msgs)[0].reason, EpisodeEndReason::Fault);
    assert!(rig.dev.plant().safe);
    let steps = rig.dev.plant().applied.len();
    rig.clock.advance(100_000);
    rig.dev.poll();
    assert_eq!(
        rig.dev.plant().applied.len(),
        steps,
        "no steps in safe stop"
    );
    rig.exchange(&HostMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
    });
    assert_eq!(rig.dev.state(), DeviceState::Idle);
}

#[test]
fn stop_mid_episode_reports_stopped_with_final_observation() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 12, -1.0));
    rig.exchange(&run(0, RunMode::Explore, 0));
    let mut msgs = rig.run_for(20);
    msgs.extend(rig.exchange(&HostMessage::Stop));
    let e = ends(&msgs);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, EpisodeEndReason::Stopped);
    assert_eq!(e[0].final_obs.as_slice(), &[rig.dev.plant().x, 1.0]);
    assert_eq!(records(&batches(&msgs), 10, 5).len() as u32, e[0].length);
    assert!(msgs.contains(&DeviceMessage::Ack(AckTopic::Stop)));
    assert_eq!(rig.dev.state(), DeviceState::Idle);
    assert!(rig.dev.plant().safe);
}

#[test]
fn late_steps_count_as_missed_deadlines_and_step_time_is_measured() {
    let mut rig = Rig::new(Integrator::new(false));
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 13, -1.0));
    rig.exchange(&run(1, RunMode::Explore, 0));
    rig.clock.auto_tick_us.set(3);
    let mut msgs = rig.run_for(10);
    rig.clock.advance(35_000); // 3.5 periods late
    msgs.extend(rig.run_for(60));
    let e = ends(&msgs)[0];
    assert_eq!(e.missed_deadlines, 1);
    assert!(e.worst_step_us >= 3, "worst step {}", e.worst_step_us);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_bytes_never_panic(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
        let mut rig = Rig::new(Integrator::new(false));
        let s = spec(false);
        rig.upload(1, &s, &params_for(&s, 14, -1.0));
        rig.exchange(&run(0, RunMode::Explore, 0));
        for c in &chunks {
            rig.host.send_raw(c);
            rig.dev.poll();
            rig.clock.advance(7_000);
            rig.host.receive();
        }
        // Still answers a real message afterwards.
        rig.host.send_raw(&[0]);
        let msgs = rig.exchange(&HostMessage::Hello { protocol_version: PROTOCOL_VERSION });
        prop_assert!(msgs.iter().any(|m| matches!(m, DeviceMessage::Hello(_))));
    }

    #[test]
    fn arbitrary_chunks_and_commits_never_panic(
        ops in proptest::collection::vec((0u8..4, any::<u32>(), 0usize..300, any::<u32>()), 1..30)) {
        let mut rig = Rig::new(Integrator::new(false));
        let s = spec(false);
        for (kind, offset, len, version) in ops {
            let version = version % 3;
            let m = match kind {
                0 => HostMessage::PolicyBegin(PolicyBegin { version, spec: s.clone(), len: offset % 200, crc: offset }),
                1 => HostMessage::PolicyChunk(PolicyChunk {
                    version,
                    offset: offset % 256,
                    values: (0..len.min(240)).map(|i| i as f32).collect(),
                }),
                2 => HostMessage::PolicyCommit { version },
                _ => run(offset % 3, RunMode::Explore, offset as u64),
            };
            rig.exchange(&m);
            rig.clock.advance(10_000);
        }
    }
}

// ----- gSDE and the action rate limit ---------------------------------------------------

/// The integrator's [8, 8] policy with a gSDE head redrawing θ_ε every `resample_every`.
fn sde_spec(resample_every: u16, full_std: bool) -> PolicySpec {
    use tether_shared::policy::SdeHead;
    PolicySpec {
        head: tether_shared::PolicyHead::GaussianSde(SdeHead {
            action_dim: 1,
            full_std,
            use_expln: false,
            resample_every,
        }),
        ..spec(false)
    }
}

/// The log-probability the host recomputes for a gSDE record (observation `obs`, action
/// `action`) with the shared functions.
fn host_sde_log_prob(s: &PolicySpec, params: &[f32], obs: &[f32], action: &[f32]) -> f32 {
    use tether_shared::policy::gaussian_log_prob_with_variance;
    use tether_shared::policy::sde::{sde_std_matrix, sde_variance};
    let tether_shared::PolicyHead::GaussianSde(head) = s.head else {
        panic!("a gSDE spec")
    };
    let view = PolicyView::new(s, params).unwrap();
    let mut scratch = [0.0f32; 64];
    let mut mean = [0.0f32; 1];
    let features = view
        .forward_with_features(obs, &mut scratch, &mut mean)
        .unwrap();
    let mut std = std::vec![0.0f32; s.noise_len()];
    assert!(sde_std_matrix(&head, view.log_std().unwrap(), &mut std));
    let mut variance = [0.0f32; 1];
    sde_variance(features, &std, &mut variance);
    gaussian_log_prob_with_variance(&mean, &variance, action)
}

#[test]
fn gsde_exploration_reports_the_state_dependent_log_prob_and_holds_its_noise() {
    for full_std in [true, false] {
        let mut rig = Rig::new(Integrator::new(false));
        let s = sde_spec(4, full_std);
        let p = params_for(&s, 3, -1.0);
        let acks = rig.upload(1, &s, &p);
        assert!(refusals(&acks).is_empty(), "{acks:?}");
        rig.exchange(&run(1, RunMode::Explore, 9));
        let msgs = rig.run_for(60);
        let recs = records(&batches(&msgs), 10, 5);
        assert_eq!(recs.len(), 50);
        let view = PolicyView::new(&s, &p).unwrap();
        let mut scratch = [0.0f32; 64];
        let mut noises = Vec::new();
        for r in &recs {
            assert_eq!(
                r[4],
                host_sde_log_prob(&s, &p, &r[..2], &r[2..3]),
                "the host's recomputation gives the device's bits"
            );
            let mut mean = [0.0f32; 1];
            view.forward(&r[..2], &mut scratch, &mut mean).unwrap();
            noises.push(r[2] - mean[0]);
        }
        // θ_ε is redrawn every 4 steps; in between the noise follows the (slowly moving)
        // features, so it changes far less within a window than across a redraw.
        let within: f32 = (0..50)
            .filter(|k| k % 4 != 0 && *k > 0)
            .map(|k| (noises[k] - noises[k - 1]).abs())
            .sum::<f32>()
            / 37.0;
        let across: f32 = (4..50)
            .step_by(4)
            .map(|k| (noises[k] - noises[k - 1]).abs())
            .sum::<f32>()
            / 12.0;
        assert!(
            within * 20.0 < across,
            "within a window {within}, across a redraw {across}"
        );
    }
}

#[test]
fn gsde_deterministic_runs_the_mean_and_same_seed_reproduces() {
    let s = sde_spec(2, true);
    let p = params_for(&s, 5, -0.5);
    let explore = |seed| {
        let mut rig = Rig::new(Integrator::new(false));
        rig.upload(1, &s, &p);
        rig.exchange(&run(2, RunMode::Explore, seed));
        let msgs = rig.run_for(120);
        let b = batches(&msgs);
        (records(&b, 10, 5), records(&b, 11, 5))
    };
    assert_eq!(explore(3), explore(3));
    assert_ne!(explore(3), explore(4));
    let mut rig = Rig::new(Integrator::new(false));
    rig.upload(1, &s, &p);
    rig.exchange(&run(1, RunMode::Deterministic, 3));
    let msgs = rig.run_for(60);
    let view = PolicyView::new(&s, &p).unwrap();
    let mut scratch = [0.0f32; 64];
    for r in records(&batches(&msgs), 10, 5) {
        let mut mean = [0.0f32; 1];
        view.forward(&r[..2], &mut scratch, &mut mean).unwrap();
        assert_eq!((r[2], r[4]), (mean[0], 0.0));
    }
}

#[test]
fn gsde_uploads_past_the_noise_capacity_or_non_finite_are_refused_keeping_the_running_policy() {
    // Room for the integrator's [8, 8] noise matrix (8 values), not for a [16] one.
    let mut rig =
        Rig::<8>::with_noise_capacity(Integrator::new(false), 1 << 20, DeviceConfig::default());
    let s = sde_spec(4, true);
    let good = params_for(&s, 1, -1.0);
    assert!(refusals(&rig.upload(1, &s, &good)).is_empty());
    let wide = PolicySpec {
        hidden: heapless::Vec::from_slice(&[16]).unwrap(),
        ..sde_spec(4, true)
    };
    assert_eq!(
        refusals(&rig.upload(2, &wide, &params_for(&wide, 1, -1.0))).first(),
        Some(&RefusalReason::OverCapacity)
    );
    let mut nan = good.clone();
    let last = nan.len() - 3;
    nan[last] = f32::NAN;
    assert_eq!(
        refusals(&rig.upload(3, &s, &nan)).first(),
        Some(&RefusalReason::NonFinite),
        "a non-finite log-std matrix"
    );
    assert_eq!(
        refusals(&rig.upload(4, &s, &params_for(&s, 1, 25.0))).first(),
        Some(&RefusalReason::NonFinite),
        "σ past e²⁰"
    );
    assert_eq!(rig.dev.active_policy(), Some(1), "the running policy stays");
    rig.exchange(&run(1, RunMode::Explore, 1));
    let msgs = rig.run_for(60);
    assert_eq!(ends(&msgs)[0].reason, EpisodeEndReason::Truncated);
    assert_eq!(records(&batches(&msgs), 10, 5).len(), 50);
}

#[test]
fn the_rate_limit_bounds_each_change_counts_its_steps_and_is_reported() {
    let limit = crate::rate_limit::ActionRateLimit::new(&[0.05]).unwrap();
    let config = DeviceConfig {
        action_rate_limit: Some(limit),
        ..DeviceConfig::default()
    };
    let mut rig = Rig::with(Integrator::new(false), 1 << 20, config);
    let (info, _) = rig.hello();
    assert_eq!(info.action_rate_limit.as_slice(), [0.05]);
    let s = spec(false);
    // A wide Gaussian: the sampled actions jump far more than 0.05 per step.
    rig.upload(1, &s, &params_for(&s, 2, 0.0));
    rig.exchange(&run(2, RunMode::Explore, 5));
    let msgs = rig.run_for(120);
    let applied = rig.dev.plant().applied.clone();
    assert_eq!(applied.len(), 100);
    let b = batches(&msgs);
    let mut replayed_clips = 0;
    for (episode, applied) in [10u32, 11].into_iter().zip(applied.chunks(50)) {
        // Each episode starts from rest; no step moves more than the limit.
        let mut previous = 0.0f32;
        let mut replay_previous = [0.0f32];
        for (record, &u) in records(&b, episode, 5).iter().zip(applied) {
            assert!((u - previous).abs() <= 0.05 + 1e-6, "{previous} → {u}");
            previous = u;
            // The host's replay of clamp + limit on the sampled action gives the same bits.
            let mut replay = [record[2].clamp(-1.0, 1.0)];
            replayed_clips += u32::from(limit.apply(&mut replay_previous, &mut replay));
            assert_eq!(replay[0].to_bits(), u.to_bits());
        }
    }
    let counted: u32 = ends(&msgs).iter().map(|e| e.rate_limited_steps).sum();
    assert!(counted > 50, "most steps were limited: {counted}");
    assert_eq!(counted, replayed_clips);
    // Without a limit nothing is counted.
    let mut free = Rig::new(Integrator::new(false));
    free.upload(1, &s, &params_for(&s, 2, 0.0));
    free.exchange(&run(1, RunMode::Explore, 5));
    let msgs = free.run_for(60);
    assert_eq!(ends(&msgs)[0].rate_limited_steps, 0);
}
