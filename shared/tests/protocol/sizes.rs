//! The size proof at run time: worst-case instances of the large messages, with every
//! capacity full, every varint at its longest and no zero byte anywhere (so COBS adds its
//! most), encode within the advertised bounds and within `MAX_FRAME_LEN`.

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use tether_shared::PolicySpec;
use tether_shared::frame::{MAX_DEVICE_FRAME, MAX_FRAME_LEN, MAX_HOST_FRAME};
use tether_shared::message::{
    DeviceInfo, EpisodeEnd, EpisodeEndReason, LogLine, MAX_PARAM_NAME, MAX_PARAM_SETTINGS,
    POLICY_CHUNK_VALUES, ParamRange, ParamSetting, PlantParams, PolicyBegin, PolicyChunk,
    RunCommand, RunMode, TRANSITION_BATCH_VALUES, TransitionBatch,
};
use tether_shared::plant::{MAX_ACTION_DIM, MAX_OBS_DIM, MAX_PLANT_NAME};
use tether_shared::policy::{MAX_HIDDEN_LAYERS, SdeHead};
use tether_shared::version::FirmwareVersion;
use tether_shared::{ActionSpace, DeviceMessage, HostMessage, PlantDescription, PolicyHead};

use crate::strategies::frame_of;

/// A finite f32 with no zero byte in its little-endian encoding.
const NO_ZERO: f32 = f32::from_bits(0x7F7F_7F7F);

/// Length in bytes of the plain postcard encoding (no CRC, no COBS).
fn payload_len<M: serde::Serialize>(m: &M) -> usize {
    postcard::to_slice(m, &mut [0u8; 2 * MAX_FRAME_LEN])
        .unwrap()
        .len()
}

fn full<const N: usize>() -> Vec<f32, N> {
    Vec::from_slice(&[NO_ZERO; N]).unwrap()
}

fn worst_host() -> [HostMessage; 5] {
    let setting = ParamSetting {
        name: core::iter::repeat_n('\u{7f}', MAX_PARAM_NAME).collect(),
        value: Some(NO_ZERO),
        range: Some(ParamRange {
            low: NO_ZERO,
            high: NO_ZERO,
        }),
    };
    [
        HostMessage::PolicyChunk(PolicyChunk {
            version: u32::MAX,
            offset: u32::MAX,
            values: full::<POLICY_CHUNK_VALUES>(),
        }),
        HostMessage::PolicyBegin(PolicyBegin {
            version: u32::MAX,
            spec: PolicySpec {
                obs_dim: u8::MAX,
                hidden: Vec::from_slice(&[u16::MAX; MAX_HIDDEN_LAYERS]).unwrap(),
                // The longest head: gSDE with every field at its largest.
                head: PolicyHead::GaussianSde(SdeHead {
                    action_dim: u8::MAX,
                    full_std: true,
                    use_expln: true,
                    resample_every: u16::MAX,
                }),
                normalize_obs: true,
            },
            len: u32::MAX,
            crc: u32::MAX,
        }),
        HostMessage::Run(RunCommand {
            first_episode: u32::MAX,
            episodes: u32::MAX,
            seed: u64::MAX,
            mode: RunMode::Deterministic,
        }),
        HostMessage::Heartbeat { sequence: u32::MAX },
        HostMessage::PlantParams(PlantParams {
            settings: core::iter::repeat_n(setting, MAX_PARAM_SETTINGS).collect(),
            range_end_share: f32::MAX,
        }),
    ]
}

fn worst_device() -> [DeviceMessage; 4] {
    let name: String<MAX_PLANT_NAME> = core::iter::repeat_n('\u{7f}', MAX_PLANT_NAME).collect();
    [
        DeviceMessage::Transitions(TransitionBatch {
            episode: u32::MAX,
            first_step: u32::MAX,
            policy_version: u32::MAX,
            values: full::<TRANSITION_BATCH_VALUES>(),
        }),
        DeviceMessage::Hello(DeviceInfo {
            protocol_version: u16::MAX,
            firmware_version: FirmwareVersion {
                major: u8::MAX,
                minor: u8::MAX,
                patch: u8::MAX,
            },
            plant: PlantDescription {
                name,
                obs_dim: u8::MAX,
                action: ActionSpace::Continuous {
                    low: full::<MAX_ACTION_DIM>(),
                    high: full::<MAX_ACTION_DIM>(),
                },
                control_rate_hz: NO_ZERO,
                episode_steps: u32::MAX,
            },
            policy_capacity: u32::MAX,
            active_policy: Some(u32::MAX),
            action_rate_limit: full::<MAX_ACTION_DIM>(),
        }),
        DeviceMessage::EpisodeEnd(EpisodeEnd {
            episode: u32::MAX,
            policy_version: u32::MAX,
            length: u32::MAX,
            episode_return: NO_ZERO,
            reason: EpisodeEndReason::Fault,
            final_obs: full::<MAX_OBS_DIM>(),
            worst_step_us: u32::MAX,
            missed_deadlines: u32::MAX,
            rate_limited_steps: u32::MAX,
        }),
        DeviceMessage::Log(LogLine {
            text: core::iter::repeat_n('\u{7f}', tether_shared::message::MAX_LOG_LEN).collect(),
        }),
    ]
}

#[test]
fn advertised_bounds_fit_one_frame() {
    const { assert!(MAX_HOST_FRAME <= MAX_FRAME_LEN) };
    const { assert!(MAX_DEVICE_FRAME <= MAX_FRAME_LEN) };
    println!(
        "postcard max: host {} device {}; frame max: host {MAX_HOST_FRAME} device {MAX_DEVICE_FRAME}",
        HostMessage::POSTCARD_MAX_SIZE,
        DeviceMessage::POSTCARD_MAX_SIZE
    );
}

#[test]
fn worst_case_host_messages_fit() {
    for m in worst_host() {
        let frame = frame_of(&m);
        assert!(
            frame.len() <= MAX_HOST_FRAME,
            "{} > {MAX_HOST_FRAME}",
            frame.len()
        );
        let payload = payload_len(&m);
        assert!(payload <= HostMessage::POSTCARD_MAX_SIZE);
    }
    // The full chunk reaches the postcard bound exactly, so the bound is not slack.
    let chunk = &worst_host()[0];
    assert_eq!(payload_len(chunk), HostMessage::POSTCARD_MAX_SIZE);
}

#[test]
fn worst_case_device_messages_fit() {
    for m in worst_device() {
        let frame = frame_of(&m);
        assert!(
            frame.len() <= MAX_DEVICE_FRAME,
            "{} > {MAX_DEVICE_FRAME}",
            frame.len()
        );
        let payload = payload_len(&m);
        assert!(payload <= DeviceMessage::POSTCARD_MAX_SIZE);
    }
    let batch = &worst_device()[0];
    assert_eq!(payload_len(batch), DeviceMessage::POSTCARD_MAX_SIZE);
}
