//! Bad input at the library level: policy uploads the device must refuse (and keep running
//! its policy), a device speaking another protocol version, a device answering garbage, a
//! device that says it runs but sends nothing; and the device's refusals again on the real
//! instruction set, its board image in QEMU, with broken frames besides.
//! CLI-level bad input (missing port, bad config) is in `trainer/tests/bad_input_cli.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tether_firmware::plant::{AnyPlant, Plant};
use tether_firmware::sim::{SimBoard, SimConfig, SimHandle};
use tether_hil_tests::qemu;
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{
    DeviceInfo, PolicyBegin, PolicyChunk, PolicyUpload, RefusalReason, RunCommand, RunMode,
};
use tether_shared::{DeviceMessage, HostMessage, PROTOCOL_VERSION, PolicySpec};
use tether_trainer::device::qemu::QemuTiming;
use tether_trainer::device::transport::POLL_INTERVAL;
use tether_trainer::device::{ClientConfig, DeviceClient, DeviceError, DeviceLink};
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, CollectedEpisode, Recovery};

fn pendulum_board() -> (DeviceClient, SimHandle) {
    let plant = AnyPlant::by_name("pendulum").expect("pendulum");
    let (mut host, board) = SimBoard::new(plant, SimConfig::default()).spawn_memory();
    host.set_timeout(POLL_INTERVAL);
    let client = DeviceClient::connect(
        DeviceLink::new("sim0", Box::new(host)),
        ClientConfig::default(),
    )
    .expect("handshake");
    (client, board)
}

fn small_policy(client: &DeviceClient) -> (PolicySpec, Vec<f32>) {
    let spec = PolicySpec::for_plant(&client.info().plant, &[8, 8], true);
    let n = spec.param_count();
    // Deterministic, non-trivial weights; the normaliser's scales must be positive.
    let params = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.4 + if i < 6 { 1.0 } else { 0.0 })
        .collect();
    (spec, params)
}

/// One deterministic episode (fixed seed) of whatever the device runs, as version `version`.
fn deterministic_episode(
    client: &mut DeviceClient,
    version: u32,
    spec: &PolicySpec,
    params: &[f32],
) -> CollectedEpisode {
    let mut active = Some(version); // already on the device: no upload
    let request = CollectRequest {
        version,
        spec: spec.clone(),
        params: Arc::new(params.to_vec()),
        first_episode: 7,
        seed: 99,
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(1),
        silence_timeout: Duration::from_secs(2),
        recovery: Recovery::default(),
    };
    let mut rollout = collect(client, &mut active, &request).expect("an episode");
    assert_eq!(rollout.episodes.len(), 1, "{:?}", rollout.rejections);
    rollout.episodes.remove(0)
}

/// Sends raw messages and returns the reason of the first refusal that comes back.
fn raw_refusal(client: &mut DeviceClient, messages: &[HostMessage]) -> Option<RefusalReason> {
    let link = client.link_mut();
    for m in messages {
        link.send(m).expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(DeviceMessage::Refused(r))) = link.recv(Duration::from_millis(50)) {
            return Some(r.reason);
        }
    }
    None
}

/// The messages of an upload whose begin declares a CRC off by one bit.
fn upload_with_wrong_crc(version: u32, spec: &PolicySpec, params: &[f32]) -> Vec<HostMessage> {
    PolicyUpload::new(version, spec, params)
        .messages()
        .map(|message| match message {
            HostMessage::PolicyBegin(mut begin) => {
                begin.crc ^= 1;
                HostMessage::PolicyBegin(begin)
            }
            other => other,
        })
        .collect()
}

fn assert_same_episode(a: &CollectedEpisode, b: &CollectedEpisode, after: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.len(), b.len(), "after {after}");
    assert_eq!(
        bits(a.trajectory.records().values()),
        bits(b.trajectory.records().values()),
        "after {after}: observations, actions, rewards and log-probabilities"
    );
}

#[test]
fn bad_uploads_are_refused_and_the_running_policy_stays() {
    let (client, board) = pendulum_board();
    drop(bad_uploads_are_refused(client));
    board.stop();
}

/// Every bad upload is refused with its reason, through the host driver where the driver
/// can send it (NaN weights, a spec for another plant) and as raw frames where the driver
/// itself would not (a wrong CRC, a spec over the device's capacity); after each one the
/// device still runs policy 1: a deterministic episode is bit-identical to the one before.
/// Returns the client, policy 1 and its deterministic episode.
fn bad_uploads_are_refused(
    mut client: DeviceClient,
) -> (DeviceClient, PolicySpec, Vec<f32>, CollectedEpisode) {
    let (spec, params) = small_policy(&client);
    client.upload(1, &spec, &params).expect("a good upload");
    let before = deterministic_episode(&mut client, 1, &spec, &params);
    assert!(before.len() > 10);

    // NaN weights, through DeviceClient::upload.
    let mut nan = params.clone();
    nan[20] = f32::NAN;
    match client.upload(2, &spec, &nan) {
        Err(DeviceError::Refused { reason, .. }) => assert_eq!(reason, RefusalReason::NonFinite),
        other => panic!("NaN weights: {other:?}"),
    }
    assert_same_episode(
        &before,
        &deterministic_episode(&mut client, 1, &spec, &params),
        "NaN",
    );

    // Wrong shape: a 4-value observation for the 3-value pendulum.
    let mut wrong = spec.clone();
    wrong.obs_dim = 4;
    let wrong_params = vec![0.5; wrong.param_count()];
    match client.upload(3, &wrong, &wrong_params) {
        Err(e @ DeviceError::Refused { .. }) => {
            let DeviceError::Refused { reason, .. } = &e else {
                unreachable!()
            };
            assert!(
                matches!(
                    reason,
                    RefusalReason::PlantMismatch | RefusalReason::BadSpec
                ),
                "{e}"
            );
            assert!(e.to_string().contains("refused"), "{e}");
        }
        other => panic!("wrong shape: {other:?}"),
    }
    assert_same_episode(
        &before,
        &deterministic_episode(&mut client, 1, &spec, &params),
        "wrong shape",
    );

    // Wrong CRC: raw frames (the driver always computes the right one).
    let reason = raw_refusal(&mut client, &upload_with_wrong_crc(4, &spec, &params));
    assert_eq!(reason, Some(RefusalReason::BadCrc));
    assert_same_episode(
        &before,
        &deterministic_episode(&mut client, 1, &spec, &params),
        "bad CRC",
    );

    // Over capacity: the driver refuses before sending (naming the capacity) ...
    let huge = PolicySpec::for_plant(&client.info().plant, &[256, 256, 256, 256], true);
    assert!(huge.param_count() > client.info().policy_capacity as usize);
    let huge_params = vec![0.0; huge.param_count()];
    match client.upload(5, &huge, &huge_params) {
        Err(e @ DeviceError::Incompatible { .. }) => {
            assert!(e.to_string().contains("holds at most"), "{e}")
        }
        other => panic!("over capacity, host side: {other:?}"),
    }
    // ... and the device refuses it too when asked directly.
    let begin = HostMessage::PolicyBegin(PolicyBegin {
        version: 5,
        spec: huge.clone(),
        len: huge.param_count() as u32,
        crc: 0,
    });
    assert_eq!(
        raw_refusal(&mut client, &[begin]),
        Some(RefusalReason::OverCapacity)
    );
    assert_same_episode(
        &before,
        &deterministic_episode(&mut client, 1, &spec, &params),
        "over capacity",
    );

    // The device says it still runs policy 1.
    client.reconnect().expect("handshake again");
    assert_eq!(client.info().active_policy, Some(1));
    (client, spec, params, before)
}

/// A fake device as an in-process byte stream: decodes the host's frames and answers each
/// `Hello` with the frame `answer`; `garbage` makes it stream seeded random bytes instead.
struct FakeDevice {
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    outgoing: VecDeque<u8>,
    answer: Option<Vec<u8>>,
    garbage: Option<u64>,
}

impl FakeDevice {
    fn answering(answer: DeviceMessage) -> Self {
        Self::answering_with(&answer)
    }

    /// Answers with any serialisable message, e.g. another protocol version's layout.
    fn answering_with(answer: &impl serde::Serialize) -> Self {
        let mut out = [0u8; MAX_FRAME_LEN];
        let frame = frame::encode(answer, &mut out).expect("encodes").to_vec();
        FakeDevice {
            decoder: Box::new(FrameDecoder::new()),
            outgoing: VecDeque::new(),
            answer: Some(frame),
            garbage: None,
        }
    }

    fn garbage(seed: u64) -> Self {
        FakeDevice {
            decoder: Box::new(FrameDecoder::new()),
            outgoing: VecDeque::new(),
            answer: None,
            garbage: Some(seed),
        }
    }
}

impl Write for FakeDevice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut input = buf;
        while let Some(result) = self.decoder.decode_next::<HostMessage>(&mut input) {
            if let (Ok(HostMessage::Hello { .. }), Some(answer)) = (result, &self.answer) {
                self.outgoing.extend(answer.iter().copied());
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for FakeDevice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(state) = self.garbage.as_mut() {
            std::thread::sleep(Duration::from_millis(2));
            for b in buf.iter_mut().take(64) {
                // xorshift64
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *b = (*state >> 24) as u8 | 1; // no 0x00: never a frame boundary
            }
            return Ok(buf.len().min(64));
        }
        if self.outgoing.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(self.outgoing.len());
        for (slot, b) in buf.iter_mut().zip(self.outgoing.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

fn quick_handshake() -> ClientConfig {
    ClientConfig {
        handshake_timeout: Duration::from_millis(400),
        ..ClientConfig::default()
    }
}

/// A device answering with protocol version + 1 is one clear error naming both versions,
/// returned at once (no hang, no retry loop).
#[test]
fn other_protocol_version_is_one_clear_error() {
    let plant = AnyPlant::by_name("pendulum").expect("pendulum");
    let info = DeviceInfo {
        protocol_version: PROTOCOL_VERSION + 1,
        firmware_version: tether_firmware::FIRMWARE_VERSION,
        plant: plant.description(),
        policy_capacity: 10_000,
        active_policy: None,
        action_rate_limit: heapless::Vec::new(),
    };
    let fake = FakeDevice::answering(DeviceMessage::Hello(info));
    let started = Instant::now();
    let err = DeviceClient::connect(DeviceLink::new("fake", Box::new(fake)), quick_handshake())
        .err()
        .expect("refused");
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = err.to_string();
    assert!(
        matches!(err, DeviceError::ProtocolMismatch { .. }),
        "{text}"
    );
    assert!(text.contains("fake"), "{text}");
    assert!(
        text.contains(&PROTOCOL_VERSION.to_string())
            && text.contains(&(PROTOCOL_VERSION + 1).to_string()),
        "names both versions: {text}"
    );
}

/// A device streaming random bytes is reported as garbage (with the byte count and a hint
/// about the baud rate) within the handshake timeout.
#[test]
fn garbage_device_is_one_clear_error() {
    let started = Instant::now();
    let err = DeviceClient::connect(
        DeviceLink::new("noisy", Box::new(FakeDevice::garbage(7))),
        quick_handshake(),
    )
    .err()
    .expect("refused");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = err.to_string();
    assert!(matches!(err, DeviceError::Garbage { .. }), "{text}");
    assert!(
        text.contains("noisy") && text.contains("baud rate"),
        "{text}"
    );
}

/// A device whose firmware predates the gSDE head (protocol version 4) answers `Hello` in
/// the version-4 layout (no `action_rate_limit`), which this trainer cannot decode: the
/// handshake still reads its version and stops at once with the compatibility message (what
/// versions 5 and 6 added, which firmware to flash), before any policy is uploaded.
#[test]
fn firmware_from_before_gsde_is_refused_with_the_compatibility_message() {
    #[derive(serde::Serialize)]
    enum DeviceMessageV4 {
        Hello(DeviceInfoV4),
    }
    #[derive(serde::Serialize)]
    struct DeviceInfoV4 {
        protocol_version: u16,
        firmware_version: tether_shared::version::FirmwareVersion,
        plant: tether_shared::PlantDescription,
        policy_capacity: u32,
        active_policy: Option<u32>,
    }
    let plant = AnyPlant::by_name("pendulum").expect("pendulum");
    let old = DeviceMessageV4::Hello(DeviceInfoV4 {
        protocol_version: 4,
        firmware_version: tether_firmware::FIRMWARE_VERSION,
        plant: plant.description(),
        policy_capacity: 4700,
        active_policy: Some(12),
    });
    let started = Instant::now();
    let err = DeviceClient::connect(
        DeviceLink::new("old-rig", Box::new(FakeDevice::answering_with(&old))),
        quick_handshake(),
    )
    .err()
    .expect("refused");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "at the first answer"
    );
    let text = err.to_string();
    assert!(
        matches!(err, DeviceError::ProtocolMismatch { .. }),
        "{text}"
    );
    for part in [
        "old-rig",
        "protocol v4 but this trainer speaks v7",
        "gSDE policy heads",
        "selective acknowledgement",
        "flash firmware built from this tether release",
    ] {
        assert!(text.contains(part), "`{part}` in: {text}");
    }
}

/// A device that keeps sending heartbeats saying it runs, but no transition for longer than
/// an episode can take, is stalled: the round fails with an error a reconnect may cure,
/// well before the silence timeout of a run would let it hang.
#[test]
fn a_device_that_heartbeats_but_sends_no_data_is_timed_out() {
    use tether_hil_tests::scripted_device::ScriptedDevice;
    use tether_shared::message::DeviceState;
    use tether_trainer::run::config::TimeoutsConfig;

    // 10 steps at 1 kHz: an episode takes 10 ms.
    let mut plant = AnyPlant::by_name("pendulum")
        .expect("pendulum")
        .description();
    plant.control_rate_hz = 1000.0;
    plant.episode_steps = 10;
    let stuck = ScriptedDevice::new(plant, DeviceState::Running, Box::new(Vec::new));
    let mut client =
        DeviceClient::connect(DeviceLink::new("stuck", Box::new(stuck)), quick_handshake())
            .expect("handshake");
    let spec = PolicySpec::for_plant(&client.info().plant, &[4], false);
    let timeouts = TimeoutsConfig {
        silence_s: 0.3,
        ..TimeoutsConfig::default()
    };
    let recovery = Recovery::for_plant(&timeouts, &client.info().plant);
    assert!(
        recovery.data_timeout < Duration::from_millis(400),
        "{recovery:?}"
    );
    let request = CollectRequest {
        version: 1,
        params: Arc::new(vec![0.0; spec.param_count()]),
        spec,
        first_episode: 0,
        seed: 1,
        mode: RunMode::Explore,
        steps: Some(100),
        episodes: None,
        silence_timeout: Duration::from_secs(60),
        recovery,
    };
    let started = Instant::now();
    let err = collect(&mut client, &mut None, &request).expect_err("no data ever comes");
    let waited = started.elapsed();
    assert!(matches!(err, DeviceError::NoData { .. }), "{err}");
    assert!(err.may_recover_by_reconnecting());
    assert!(err.to_string().contains("stuck"), "{err}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

// ----- the same firmware on the real instruction set ----------------------------------------

/// A small valid host message of any kind, for [`broken_frames`] to damage.
fn some_host_message(rng: &mut ChaCha8Rng, spec: &PolicySpec) -> HostMessage {
    let version = rng.random_range(1..1000);
    match rng.random_range(0..7) {
        0 => HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        },
        1 => HostMessage::Heartbeat {
            sequence: rng.random(),
        },
        2 => HostMessage::Stop,
        3 => HostMessage::Run(RunCommand {
            first_episode: rng.random(),
            episodes: rng.random_range(0..3),
            seed: rng.random(),
            mode: RunMode::Explore,
        }),
        4 => HostMessage::PolicyBegin(PolicyBegin {
            version,
            spec: spec.clone(),
            len: spec.param_count() as u32,
            crc: rng.random(),
        }),
        5 => {
            let values: Vec<f32> = (0..rng.random_range(1..9)).map(|_| rng.random()).collect();
            HostMessage::PolicyChunk(PolicyChunk {
                version,
                offset: 0,
                values: heapless::Vec::from_slice(&values).expect("fits"),
            })
        }
        _ => HostMessage::PolicyCommit { version },
    }
}

/// `count` host inputs no device may act on, each ending in `0x00`: random bytes, valid
/// frames cut short, valid frames with 1–3 bits flipped, and (rarely) runs of bytes longer
/// than a frame may be.
fn broken_frames(rng: &mut ChaCha8Rng, spec: &PolicySpec, count: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    for _ in 0..count {
        let mut out = [0u8; MAX_FRAME_LEN];
        let valid = frame::encode(&some_host_message(rng, spec), &mut out)
            .expect("encodes")
            .to_vec();
        let body = valid.len() - 1; // without the terminator
        let mut input = match rng.random_range(0..100) {
            0 => (0..MAX_FRAME_LEN + rng.random_range(1..200))
                .map(|_| rng.random::<u8>() | 1)
                .collect(),
            1..20 => (0..rng.random_range(1..64))
                .map(|_| rng.random::<u8>())
                .collect(),
            20..50 => valid[..rng.random_range(1..body)].to_vec(),
            _ => {
                // Distinct bits: two flips of one bit would restore the frame.
                let mut flipped = valid[..body].to_vec();
                let flips = rng.random_range(1..4).min(body * 8);
                for bit in rand::seq::index::sample(rng, body * 8, flips) {
                    flipped[bit / 8] ^= 1 << (bit % 8);
                }
                flipped
            }
        };
        input.push(0);
        stream.extend(input);
    }
    stream
}

/// The bad-input cases on the real instruction set, against the firmware's Cortex-M4F
/// image in QEMU: every bad upload is refused with its reason (as on the host build), then
/// 3000 broken frames — garbage, cut frames, flipped bits (wrong CRC or broken COBS),
/// overlong runs — are each dropped without an answer: the board counts exactly as many
/// refused frames as the shared decoder finds in the same bytes, by reason. Afterwards the
/// device still runs policy 1, its deterministic episode unchanged, and QEMU never stopped
/// (a panic or fault would end it with a failure status).
#[test]
fn a_qemu_device_refuses_bad_input_and_keeps_its_policy() {
    let (client, mut qemu) = qemu::connect("pendulum", QemuTiming::FreeRunning);
    let (mut client, spec, params, before) = bad_uploads_are_refused(client);
    qemu::assert_running(&mut qemu);

    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD_F4A3);
    let stream = broken_frames(&mut rng, &spec, 3000);
    let mut reference = Box::new(FrameDecoder::<MAX_FRAME_LEN>::new());
    let mut rest = stream.as_slice();
    while let Some(result) = reference.decode_next::<HostMessage>(&mut rest) {
        assert!(result.is_err(), "a broken frame decoded: {result:?}");
    }
    let expected = reference.stats();
    assert!(
        expected.crc_errors > 0 && expected.cobs_errors > 0 && expected.overflows > 0,
        "every kind of damage is exercised: {expected:?}"
    );
    let bad_before = qemu::reported_bad_frames(&qemu);
    let started = Instant::now();
    let mut raw = std::fs::OpenOptions::new()
        .write(true)
        .open(qemu.pty())
        .expect("the pty opens for writing");
    // A marked heartbeat after them, on the same blocking writer: QEMU's UART drains the
    // pty slower than the host fills it, so the link's timed send could find it still full
    // under load. Once the device echoes the mark, it has read everything before it, and
    // said nothing but heartbeats meanwhile.
    const MARK: u32 = 0x7E7E_0001;
    let mut mark_frame = [0u8; MAX_FRAME_LEN + 8];
    let mark = frame::encode(&HostMessage::Heartbeat { sequence: MARK }, &mut mark_frame)
        .expect("a heartbeat encodes");
    raw.write_all(&stream)
        .and_then(|()| raw.write_all(mark))
        .expect("the broken frames and the mark are written");
    let link = client.link_mut();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the marked heartbeat was not echoed"
        );
        match link
            .recv(Duration::from_millis(100))
            .expect("the link works")
        {
            Some(DeviceMessage::Heartbeat(h)) if h.last_host_sequence == MARK => break,
            None | Some(DeviceMessage::Heartbeat(_) | DeviceMessage::Log(_)) => {}
            Some(other) => panic!("the device answered a broken frame: {other:?}"),
        }
    }
    let sent = started.elapsed();
    let want = bad_before + expected.errors();
    let reported = qemu::wait_for_bad_frames(&qemu, want, Duration::from_secs(5));
    eprintln!(
        "{} bytes of broken frames in {:.1} s: the board refused {} frames ({expected:?})",
        stream.len(),
        sent.as_secs_f64(),
        reported - bad_before
    );
    assert_eq!(reported, want, "refused frames: {expected:?}");

    assert_same_episode(
        &before,
        &deterministic_episode(&mut client, 1, &spec, &params),
        "broken frames",
    );
    client.reconnect().expect("handshake again");
    assert_eq!(client.info().active_policy, Some(1));
    qemu::assert_running(&mut qemu);
}
