//! Bad input at the library level: policy uploads the device must refuse (and keep running
//! its policy), a device speaking another protocol version, a device answering garbage, a
//! device that says it runs but sends nothing.
//! CLI-level bad input (missing port, bad config) is in `trainer/tests/bad_input_cli.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_firmware::plant::{AnyPlant, Plant};
use tether_firmware::sim::{SimBoard, SimConfig, SimHandle};
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{DeviceInfo, PolicyBegin, PolicyUpload, RefusalReason, RunMode};
use tether_shared::{DeviceMessage, HostMessage, PROTOCOL_VERSION, PolicySpec};
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

/// Every bad upload is refused with its reason, through the host driver where the driver
/// can send it (NaN weights, a spec for another plant) and as raw frames where the driver
/// itself would not (a wrong CRC, a spec over the device's capacity); after each one the
/// device still runs policy 1: a deterministic episode is bit-identical to the one before.
#[test]
fn bad_uploads_are_refused_and_the_running_policy_stays() {
    let (mut client, board) = pendulum_board();
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
    drop(client);
    board.stop();
}

/// A fake device as an in-process byte stream: decodes the host's frames and answers each
/// `Hello` with `answer`; `garbage` makes it stream seeded random bytes instead.
struct FakeDevice {
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    outgoing: VecDeque<u8>,
    answer: Option<DeviceMessage>,
    garbage: Option<u64>,
}

impl FakeDevice {
    fn answering(answer: DeviceMessage) -> Self {
        FakeDevice {
            decoder: Box::new(FrameDecoder::new()),
            outgoing: VecDeque::new(),
            answer: Some(answer),
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
                let mut out = [0u8; MAX_FRAME_LEN];
                let bytes = frame::encode(answer, &mut out).expect("encodes");
                self.outgoing.extend(bytes.iter().copied());
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
