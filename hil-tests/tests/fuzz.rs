//! Seeded fuzzing of both frame receivers: the firmware's `Device::poll` path (through a mock
//! link) and the host's `FrameDecoder` / `DeviceLink`. Inputs are random bytes and mutated
//! valid frames (bit flips, inserted, deleted and duplicated bytes, truncation, splices),
//! interleaved with valid uploads and runs so the device is fuzzed in every state, and with
//! the selective-repeat messages (releases, resend requests for real, endless and
//! never-sent ranges, batch limits; `NotRetained` on the host side), with the bring-up
//! messages (`Observe`, pulses in and out of bounds; `Observation` on the host side), and with plant
//! parameters of every kind (valid, extreme, invalid), so simulated plants also run
//! episodes with whatever physics a valid but strange setting gives them.
//!
//! Properties: no panic; memory stays bounded — the device's outgoing queue never exceeds
//! `TX_CAPACITY` (the firmware core has no heap, so that queue and the decoder's fixed
//! buffer are all it could fill), the host link's receive buffer keeps its fixed size.
//!
//! `TETHER_FUZZ_CASES` sets the number of inputs per target (default 20 000);
//! CI's long job runs `TETHER_FUZZ_CASES=1000000 cargo test --release -p tether-hil-tests --test fuzz`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};
use tether_firmware::link::TX_CAPACITY;
use tether_firmware::plant::AnyPlant;
use tether_firmware::{Clock, Device, DeviceConfig};
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::DeviceState;
use tether_shared::message::{
    EpisodeEnd, EpisodeEndReason, Heartbeat, ParamRange, ParamSetting, PlantParams, PolicyUpload,
    ReleaseMark, RunCommand, RunMode, StepRange, TransitionBatch,
};
use tether_shared::seeds::SplitMix64;
use tether_shared::{DeviceMessage, HostMessage, PolicySpec};
use tether_trainer::device::DeviceLink;

fn cases() -> u64 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// Seeded draws that drive the mutations (SplitMix64: small, good enough for this).
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Mutates an encoded frame in place: the classic byte-level mutations.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.push(rng.byte());
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(7) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.byte(),
            2 => bytes.insert(at, rng.byte()),
            3 => {
                bytes.remove(at);
            }
            4 => {
                let b = bytes[at];
                bytes.insert(at, b);
            }
            5 => bytes.truncate(at),
            _ => bytes[at] = 0, // a premature terminator
        }
    }
}

fn encode<M: serde::Serialize>(message: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    frame::encode(message, &mut buf)
        .expect("valid messages encode")
        .to_vec()
}

// ----- device side ------------------------------------------------------------------------

/// A link that hands the device scripted input and swallows (or, at random, refuses) its
/// output.
#[derive(Default)]
struct MockLink {
    input: VecDeque<u8>,
    written: u64,
    /// While set, the link takes no bytes (the device's queue fills).
    blocked: bool,
}

impl ErrorType for MockLink {
    type Error = embedded_io::ErrorKind;
}
impl Read for MockLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.input.len());
        for (slot, b) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}
impl ReadReady for MockLink {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.input.is_empty())
    }
}
impl Write for MockLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.blocked {
            return Ok(0);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
impl WriteReady for MockLink {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.blocked)
    }
}

#[derive(Clone, Default)]
struct TestClock(Rc<Cell<u64>>);
impl Clock for TestClock {
    fn now_us(&self) -> u64 {
        self.0.get()
    }
}

const CAP: usize = 4096;

/// A valid upload of a small policy followed by a run: drives the device into `Running`.
fn upload_and_run(rng: &mut Rng, plant: &tether_shared::PlantDescription) -> Vec<HostMessage> {
    let spec = PolicySpec::for_plant(plant, &[8], rng.below(2) == 0);
    let n = spec.param_count();
    let params: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 + 0.05).collect();
    let version = rng.next() as u32;
    let mut out = vec![HostMessage::Hello {
        protocol_version: tether_shared::PROTOCOL_VERSION,
    }];
    out.extend(PolicyUpload::new(version, &spec, &params).messages());
    // Small episode numbers half the time, so recovery messages can name real frames.
    let first_episode = match rng.below(2) {
        0 => rng.below(4) as u32,
        _ => rng.next() as u32,
    };
    out.push(HostMessage::Run(RunCommand {
        first_episode,
        episodes: rng.below(3) as u32,
        seed: rng.next(),
        mode: if rng.below(2) == 0 {
            RunMode::Explore
        } else {
            RunMode::Deterministic
        },
    }));
    out
}

/// A number a parameter setting might carry: mostly plausible multiples of `nominal`, but
/// also zero, negatives, huge values, NaN and infinities.
fn param_number(rng: &mut Rng, nominal: f32) -> f32 {
    match rng.below(8) {
        0 => 0.0,
        1 => -nominal,
        2 => f32::NAN,
        3 => f32::INFINITY,
        4 => f32::from_bits(rng.next() as u32),
        5 => rng.below(5) as f32,
        _ => nominal * (0.25 + 2.0 * (rng.below(1000) as f32 / 1000.0)),
    }
}

/// Plant parameters for `plant`: up to 8 settings of its own parameters (now and then one
/// it does not have), values, ranges and a range end share from [`param_number`] — valid,
/// extreme and invalid alike, so the device both refuses and runs with strange physics.
fn plant_params(rng: &mut Rng, plant: &str) -> PlantParams {
    let table = AnyPlant::params_of(plant).unwrap_or(&[]);
    let mut params = PlantParams::default();
    for _ in 0..rng.below(9) {
        let (name, nominal) = match table.get(rng.below(table.len() + 1)) {
            Some(spec) => (spec.name, spec.default.max(1.0e-3)),
            None => ("no_such_parameter", 1.0),
        };
        let value = (rng.below(2) == 0).then(|| param_number(rng, nominal));
        let range = (rng.below(2) == 0).then(|| {
            let low = param_number(rng, 1.0);
            ParamRange {
                low,
                high: low + param_number(rng, 0.5),
            }
        });
        if let Some(setting) = ParamSetting::new(name, value, range) {
            let _ = params.settings.push(setting);
        }
    }
    // Half the messages weight the draws toward the ranges' ends (a share in [0, 1] or not).
    if rng.below(2) == 0 {
        params.range_end_share = param_number(rng, 0.5);
    }
    params
}

/// A random valid host message (to be mutated or sent as is).
fn some_host_message(rng: &mut Rng, plant: &tether_shared::PlantDescription) -> HostMessage {
    let mut all = upload_and_run(rng, plant);
    all.push(HostMessage::PlantParams(plant_params(
        rng,
        plant.name.as_str(),
    )));
    all.push(HostMessage::Stop);
    all.push(HostMessage::Heartbeat {
        sequence: rng.next() as u32,
    });
    // Bring-up: observing, and test pulses in and out of bounds (any action, any length).
    all.push(HostMessage::Observe);
    let mut action = heapless::Vec::new();
    for _ in 0..rng.below(3) {
        let value = match rng.below(10) {
            9 => f32::NAN,
            k => (k as f32 - 4.0) * 0.5,
        };
        let _ = action.push(value);
    }
    all.push(HostMessage::Pulse(tether_shared::message::PulseCommand {
        action,
        duration_us: rng.below(1_000_000) as u32,
    }));
    all.extend(recovery_messages(rng));
    let i = rng.below(all.len());
    all.swap_remove(i)
}

/// Selective-repeat messages: releases, resend requests (real-looking ranges, ranges to
/// the episode's end, ranges that never existed) and batch limits.
fn recovery_messages(rng: &mut Rng) -> Vec<HostMessage> {
    let episode = rng.below(8) as u32;
    let from_step = rng.below(400) as u32;
    let to_step = match rng.below(3) {
        0 => StepRange::TO_END,
        1 => from_step.saturating_add(rng.below(64) as u32),
        _ => rng.next() as u32,
    };
    vec![
        HostMessage::Release(ReleaseMark {
            episode,
            step: rng.below(400) as u32,
        }),
        HostMessage::Resend(StepRange {
            episode,
            from_step,
            to_step,
        }),
        HostMessage::BatchLimit {
            values: rng.next() as u16,
        },
        HostMessage::Received(StepRange {
            episode,
            from_step,
            to_step,
        }),
    ]
}

/// The device survives arbitrary and mutated input in every state: no panic, and its
/// outgoing queue never grows past its fixed capacity, even with the link blocked.
#[test]
fn device_poll_survives_arbitrary_input() {
    let mut rng = Rng::new(0xDE71CE);
    let total = cases();
    let mut done = 0u64;
    while done < total {
        let clock = TestClock::default();
        let plant =
            AnyPlant::by_name(["pendulum", "cartpole", "qube"][rng.below(3)]).expect("plant");
        let description = tether_firmware::plant::Plant::description(&plant);
        let config = DeviceConfig {
            watchdog_timeout_us: if rng.below(2) == 0 { 0 } else { 50_000 },
            heartbeat_period_us: 20_000,
            action_rate_limit: (rng.below(2) == 0)
                .then(|| tether_firmware::rate_limit::ActionRateLimit::new(&[0.3]))
                .and_then(Result::ok),
        };
        let mut device: Box<Device<AnyPlant, MockLink, TestClock, CAP>> = Box::new(Device::new(
            plant,
            MockLink::default(),
            clock.clone(),
            config,
        ));
        // One device lives through up to 500 inputs, so state carries across them.
        for _ in 0..500 {
            if done >= total {
                break;
            }
            done += 1;
            let mut bytes = Vec::new();
            match rng.below(10) {
                // Pure noise, with or without terminators.
                0 | 1 => {
                    let len = rng.below(2 * MAX_FRAME_LEN);
                    let zero_free = rng.below(2) == 0;
                    bytes.extend((0..len).map(|_| {
                        let b = rng.byte();
                        if zero_free { b | 1 } else { b }
                    }));
                }
                // A valid session start, untouched: lets the device run episodes (with
                // whatever physics the parameters it accepts give it).
                2 => {
                    let params = plant_params(&mut rng, description.name.as_str());
                    bytes.extend(encode(&HostMessage::PlantParams(params)));
                    for m in upload_and_run(&mut rng, &description) {
                        bytes.extend(encode(&m));
                    }
                }
                // Mutated valid frames, several in a row.
                _ => {
                    for _ in 0..1 + rng.below(3) {
                        let mut f = encode(&some_host_message(&mut rng, &description));
                        mutate(&mut rng, &mut f);
                        bytes.extend(f);
                    }
                }
            }
            device.link_io_mut().input.extend(bytes);
            device.link_io_mut().blocked = rng.below(8) == 0;
            for _ in 0..1 + rng.below(40) {
                clock.0.set(clock.0.get() + rng.below(30_000) as u64);
                device.poll();
                assert!(device.tx_pending() <= TX_CAPACITY, "tx queue overflowed");
            }
            // Whatever arrived is consumed within a bounded number of polls.
            device.link_io_mut().blocked = false;
            for _ in 0..1000 {
                if device.link_io_mut().input.is_empty() {
                    break;
                }
                device.poll();
                assert!(device.tx_pending() <= TX_CAPACITY, "tx queue overflowed");
            }
            assert!(
                device.link_io_mut().input.is_empty(),
                "the device stopped reading"
            );
        }
    }
}

// ----- host side --------------------------------------------------------------------------

fn some_device_message(rng: &mut Rng) -> DeviceMessage {
    match rng.below(6) {
        0 => DeviceMessage::Transitions(TransitionBatch {
            episode: rng.next() as u32,
            first_step: rng.below(400) as u32,
            policy_version: rng.next() as u32,
            values: (0..rng.below(241)).map(|i| i as f32 * 0.25 - 3.0).collect(),
        }),
        1 => DeviceMessage::EpisodeEnd(EpisodeEnd {
            episode: rng.next() as u32,
            policy_version: 3,
            length: rng.below(1000) as u32,
            episode_return: -12.5,
            reason: EpisodeEndReason::Truncated,
            final_obs: (0..rng.below(17)).map(|i| i as f32).collect(),
            worst_step_us: 10,
            missed_deadlines: 0,
            rate_limited_steps: 0,
        }),
        2 => DeviceMessage::Heartbeat(Heartbeat {
            uptime_us: rng.next() as u32,
            state: DeviceState::Running,
            last_host_sequence: 4,
        }),
        3 => DeviceMessage::NotRetained(StepRange {
            episode: rng.next() as u32,
            from_step: rng.below(400) as u32,
            to_step: rng.next() as u32,
        }),
        4 => DeviceMessage::Observation(tether_shared::message::Observation {
            uptime_us: rng.next() as u32,
            values: (0..rng.below(17)).map(|i| i as f32 * 0.5).collect(),
            pulsing: rng.below(2) == 0,
        }),
        _ => DeviceMessage::Ack(tether_shared::message::AckTopic::Run),
    }
}

fn host_input(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = Vec::new();
    if rng.below(4) == 0 {
        let len = rng.below(3 * MAX_FRAME_LEN);
        bytes.extend((0..len).map(|_| rng.byte()));
    } else {
        for _ in 0..1 + rng.below(3) {
            let mut f = encode(&some_device_message(rng));
            if rng.below(4) != 0 {
                mutate(rng, &mut f);
            }
            bytes.extend(f);
        }
    }
    bytes
}

/// The host's frame decoder takes any bytes in any chunking without panicking, never
/// delivers a message from a frame whose bytes were not a valid frame, and counts each
/// frame it threw away.
#[test]
fn host_decoder_survives_arbitrary_input() {
    let mut rng = Rng::new(0x4057);
    let mut decoder = Box::new(FrameDecoder::<MAX_FRAME_LEN>::new());
    for _ in 0..cases() {
        let bytes = host_input(&mut rng);
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len());
            let (mut chunk, tail) = rest.split_at(take);
            rest = tail;
            while let Some(result) = decoder.decode_next::<DeviceMessage>(&mut chunk) {
                if let Ok(DeviceMessage::Transitions(b)) = result {
                    assert!(b.values.len() <= 240);
                }
            }
        }
    }
    let s = decoder.stats();
    assert!(s.frames > 0 && s.errors() > 0, "{s:?}");
}

/// A byte stream that plays back fuzz input in random-sized reads.
struct Playback {
    data: VecDeque<u8>,
    rng: Rng,
}

impl io::Read for Playback {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = (1 + self.rng.below(buf.len())).min(self.data.len());
        for (slot, b) in buf.iter_mut().zip(self.data.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl io::Write for Playback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The host's `DeviceLink` over a stream of fuzz input: `recv` returns messages or `None`,
/// never panics, and its receive buffer keeps its fixed size however much garbage arrives.
#[test]
fn host_link_survives_arbitrary_input() {
    let mut rng = Rng::new(0x11AC);
    let batches = (cases() / 200).max(20);
    let mut seen = 0u64;
    for _ in 0..batches {
        let mut data = VecDeque::new();
        for _ in 0..200 {
            data.extend(host_input(&mut rng));
        }
        let stream = Playback {
            data,
            rng: Rng::new(rng.next()),
        };
        let mut link = DeviceLink::new("fuzz", Box::new(stream));
        let capacity = link.buffer_capacity();
        // `None` once the stream is dry (the playback answers every read while it has data).
        while let Some(message) = link
            .recv(std::time::Duration::from_millis(1))
            .expect("fuzz input is never an I/O error")
        {
            let _ = message;
            seen += 1;
            assert_eq!(link.buffer_capacity(), capacity);
        }
        assert!(link.rejected_frames() + seen > 0);
    }
    assert!(seen > 0);
}
