//! proptest strategies for every message, and helpers shared by the tests.

use heapless::{String, Vec};
use proptest::prelude::*;
use tether_shared::frame::{self, FrameDecoder, FrameError, MAX_FRAME_LEN};
use tether_shared::message::{
    AckTopic, DeviceInfo, DeviceState, EpisodeEnd, EpisodeEndReason, Heartbeat, LogLine,
    MAX_LOG_LEN, MAX_PARAM_NAME, MAX_PARAM_SETTINGS, Observation, ParamRange, ParamSetting,
    PlantParams, PolicyBegin, PolicyChunk, PulseCommand, Refusal, RefusalReason, ReleaseMark,
    RunCommand, RunMode, StepRange, TransitionBatch,
};
use tether_shared::plant::{MAX_PLANT_NAME, PlantDescription};
use tether_shared::policy::SdeHead;
use tether_shared::version::FirmwareVersion;
use tether_shared::{ActionSpace, DeviceMessage, HostMessage, PolicyHead, PolicySpec};

/// Any f32 bit pattern, NaNs included: the wire must carry all of them unchanged.
pub fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        any::<u32>().prop_map(f32::from_bits),
        Just(0.0f32),
        Just(-0.0f32),
    ]
}

pub fn floats<const N: usize>() -> impl Strategy<Value = Vec<f32, N>> {
    prop::collection::vec(float(), 0..=N).prop_map(|v| Vec::from_slice(&v).unwrap())
}

/// A string of at most `N` bytes of UTF-8 (any chars, multi-byte ones included).
pub fn text<const N: usize>() -> impl Strategy<Value = String<N>> {
    prop::collection::vec(any::<char>(), 0..=N).prop_map(|chars| {
        let mut s = String::new();
        for c in chars {
            if s.push(c).is_err() {
                break;
            }
        }
        s
    })
}

fn action_space() -> impl Strategy<Value = ActionSpace> {
    prop_oneof![
        (floats(), floats()).prop_map(|(low, high)| ActionSpace::Continuous { low, high }),
        any::<u8>().prop_map(|n| ActionSpace::Discrete { n }),
    ]
}

fn plant() -> impl Strategy<Value = PlantDescription> {
    (
        text::<MAX_PLANT_NAME>(),
        any::<u8>(),
        action_space(),
        float(),
        any::<u32>(),
    )
        .prop_map(
            |(name, obs_dim, action, control_rate_hz, episode_steps)| PlantDescription {
                name,
                obs_dim,
                action,
                control_rate_hz,
                episode_steps,
            },
        )
}

fn spec() -> impl Strategy<Value = PolicySpec> {
    let head = prop_oneof![
        any::<u8>().prop_map(|action_dim| PolicyHead::Gaussian { action_dim }),
        any::<u8>().prop_map(|n| PolicyHead::Categorical { n }),
        (any::<u8>(), any::<bool>(), any::<bool>(), any::<u16>()).prop_map(
            |(action_dim, full_std, use_expln, resample_every)| {
                PolicyHead::GaussianSde(SdeHead {
                    action_dim,
                    full_std,
                    use_expln,
                    resample_every,
                })
            }
        ),
    ];
    (
        any::<u8>(),
        prop::collection::vec(any::<u16>(), 0..=4),
        head,
        any::<bool>(),
    )
        .prop_map(|(obs_dim, hidden, head, normalize_obs)| PolicySpec {
            obs_dim,
            hidden: Vec::from_slice(&hidden).unwrap(),
            head,
            normalize_obs,
        })
}

fn ack_topic() -> impl Strategy<Value = AckTopic> {
    prop_oneof![
        any::<u32>().prop_map(|version| AckTopic::PolicyBegin { version }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(version, received)| AckTopic::PolicyChunk { version, received }),
        any::<u32>().prop_map(|version| AckTopic::PolicyCommit { version }),
        Just(AckTopic::Run),
        Just(AckTopic::Stop),
        any::<u8>().prop_map(|count| AckTopic::PlantParams { count }),
        Just(AckTopic::Observe),
        Just(AckTopic::Pulse),
    ]
}

/// Any plant parameters: names of any UTF-8, any values (NaNs included), any ranges, any
/// range end share.
pub fn plant_params() -> impl Strategy<Value = PlantParams> {
    let range = (float(), float()).prop_map(|(low, high)| ParamRange { low, high });
    let setting = (
        text::<MAX_PARAM_NAME>(),
        proptest::option::of(float()),
        proptest::option::of(range),
    )
        .prop_map(|(name, value, range)| ParamSetting { name, value, range });
    let settings = prop::collection::vec(setting, 0..=MAX_PARAM_SETTINGS);
    (settings, float()).prop_map(|(settings, range_end_share)| PlantParams {
        settings: Vec::from_slice(&settings).unwrap(),
        range_end_share,
    })
}

pub const REFUSAL_REASONS: [RefusalReason; 17] = [
    RefusalReason::ProtocolVersion,
    RefusalReason::OverCapacity,
    RefusalReason::BadSpec,
    RefusalReason::PlantMismatch,
    RefusalReason::LengthMismatch,
    RefusalReason::OutOfOrder,
    RefusalReason::Incomplete,
    RefusalReason::BadCrc,
    RefusalReason::NonFinite,
    RefusalReason::NoPolicy,
    RefusalReason::Faulted,
    RefusalReason::UnknownParam,
    RefusalReason::BadParam,
    RefusalReason::FixedPhysics,
    RefusalReason::PulseOutOfBounds,
    RefusalReason::Busy,
    RefusalReason::BadRangeEndShare,
];

const END_REASONS: [EpisodeEndReason; 5] = [
    EpisodeEndReason::Terminated,
    EpisodeEndReason::Truncated,
    EpisodeEndReason::Stopped,
    EpisodeEndReason::Overrun,
    EpisodeEndReason::Fault,
];

const STATES: [DeviceState; 4] = [
    DeviceState::Idle,
    DeviceState::Running,
    DeviceState::SafeStop,
    DeviceState::Observing,
];

pub fn device_message() -> impl Strategy<Value = DeviceMessage> {
    let hello = (
        any::<u16>(),
        any::<[u8; 3]>(),
        plant(),
        any::<u32>(),
        any::<Option<u32>>(),
        floats(),
    )
        .prop_map(
            |(
                protocol_version,
                [major, minor, patch],
                plant,
                policy_capacity,
                active_policy,
                action_rate_limit,
            )| {
                DeviceMessage::Hello(DeviceInfo {
                    protocol_version,
                    firmware_version: FirmwareVersion {
                        major,
                        minor,
                        patch,
                    },
                    plant,
                    policy_capacity,
                    active_policy,
                    action_rate_limit,
                })
            },
        );
    let refused = (ack_topic(), prop::sample::select(&REFUSAL_REASONS[..]))
        .prop_map(|(topic, reason)| DeviceMessage::Refused(Refusal { topic, reason }));
    let transitions = (any::<u32>(), any::<u32>(), any::<u32>(), floats()).prop_map(
        |(episode, first_step, policy_version, values)| {
            DeviceMessage::Transitions(TransitionBatch {
                episode,
                first_step,
                policy_version,
                values,
            })
        },
    );
    let episode_end = (
        any::<[u32; 3]>(),
        float(),
        prop::sample::select(&END_REASONS[..]),
        floats(),
        any::<[u32; 3]>(),
    )
        .prop_map(
            |(
                [episode, policy_version, length],
                episode_return,
                reason,
                final_obs,
                [worst_step_us, missed_deadlines, rate_limited_steps],
            )| {
                DeviceMessage::EpisodeEnd(EpisodeEnd {
                    episode,
                    policy_version,
                    length,
                    episode_return,
                    reason,
                    final_obs,
                    worst_step_us,
                    missed_deadlines,
                    rate_limited_steps,
                })
            },
        );
    let heartbeat = (
        any::<u32>(),
        prop::sample::select(&STATES[..]),
        any::<u32>(),
    )
        .prop_map(|(uptime_us, state, last_host_sequence)| {
            DeviceMessage::Heartbeat(Heartbeat {
                uptime_us,
                state,
                last_host_sequence,
            })
        });
    let log = text::<MAX_LOG_LEN>().prop_map(|text| DeviceMessage::Log(LogLine { text }));
    let observation =
        (any::<u32>(), floats(), any::<bool>()).prop_map(|(uptime_us, values, pulsing)| {
            DeviceMessage::Observation(Observation {
                uptime_us,
                values,
                pulsing,
            })
        });
    prop_oneof![
        hello,
        ack_topic().prop_map(DeviceMessage::Ack),
        refused,
        transitions,
        episode_end,
        heartbeat,
        log,
        observation,
        step_range().prop_map(DeviceMessage::NotRetained),
    ]
}

pub fn step_range() -> impl Strategy<Value = StepRange> {
    any::<[u32; 3]>().prop_map(|[episode, from_step, to_step]| StepRange {
        episode,
        from_step,
        to_step,
    })
}

pub fn host_message() -> impl Strategy<Value = HostMessage> {
    let begin =
        (any::<u32>(), spec(), any::<u32>(), any::<u32>()).prop_map(|(version, spec, len, crc)| {
            HostMessage::PolicyBegin(PolicyBegin {
                version,
                spec,
                len,
                crc,
            })
        });
    let chunk = (any::<u32>(), any::<u32>(), floats()).prop_map(|(version, offset, values)| {
        HostMessage::PolicyChunk(PolicyChunk {
            version,
            offset,
            values,
        })
    });
    let run = (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        prop::sample::select(&[RunMode::Explore, RunMode::Deterministic][..]),
    )
        .prop_map(|(first_episode, episodes, seed, mode)| {
            HostMessage::Run(RunCommand {
                first_episode,
                episodes,
                seed,
                mode,
            })
        });
    prop_oneof![
        any::<u16>().prop_map(|protocol_version| HostMessage::Hello { protocol_version }),
        begin,
        chunk,
        any::<u32>().prop_map(|version| HostMessage::PolicyCommit { version }),
        run,
        Just(HostMessage::Stop),
        any::<u32>().prop_map(|sequence| HostMessage::Heartbeat { sequence }),
        plant_params().prop_map(HostMessage::PlantParams),
        Just(HostMessage::Observe),
        (floats(), any::<u32>()).prop_map(|(action, duration_us)| {
            HostMessage::Pulse(PulseCommand {
                action,
                duration_us,
            })
        }),
        any::<[u32; 2]>()
            .prop_map(|[episode, step]| HostMessage::Release(ReleaseMark { episode, step })),
        step_range().prop_map(HostMessage::Resend),
        any::<u16>().prop_map(|values| HostMessage::BatchLimit { values }),
        step_range().prop_map(HostMessage::Received),
    ]
}

/// Number of [`HostMessage`] kinds; the match is exhaustive so a new kind fails to compile
/// here until the tests cover it.
pub const HOST_KINDS: usize = 14;
pub fn host_kind(m: &HostMessage) -> usize {
    match m {
        HostMessage::Hello { .. } => 0,
        HostMessage::PolicyBegin(_) => 1,
        HostMessage::PolicyChunk(_) => 2,
        HostMessage::PolicyCommit { .. } => 3,
        HostMessage::Run(_) => 4,
        HostMessage::Stop => 5,
        HostMessage::Heartbeat { .. } => 6,
        HostMessage::PlantParams(_) => 7,
        HostMessage::Observe => 8,
        HostMessage::Pulse(_) => 9,
        HostMessage::Release(_) => 10,
        HostMessage::Resend(_) => 11,
        HostMessage::BatchLimit { .. } => 12,
        HostMessage::Received(_) => 13,
    }
}

/// Number of [`DeviceMessage`] kinds (exhaustive, as [`host_kind`]).
pub const DEVICE_KINDS: usize = 9;
pub fn device_kind(m: &DeviceMessage) -> usize {
    match m {
        DeviceMessage::Hello(_) => 0,
        DeviceMessage::Ack(_) => 1,
        DeviceMessage::Refused(_) => 2,
        DeviceMessage::Transitions(_) => 3,
        DeviceMessage::EpisodeEnd(_) => 4,
        DeviceMessage::Heartbeat(_) => 5,
        DeviceMessage::Log(_) => 6,
        DeviceMessage::Observation(_) => 7,
        DeviceMessage::NotRetained(_) => 8,
    }
}

/// The frame of `m`, as an owned vector.
pub fn frame_of<M: serde::Serialize>(m: &M) -> std::vec::Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    frame::encode(m, &mut buf).unwrap().to_vec()
}

/// Feeds `pieces` one after the other and collects everything the decoder yields.
pub fn decode_pieces<M: serde::de::DeserializeOwned, const N: usize>(
    decoder: &mut FrameDecoder<N>,
    pieces: &[&[u8]],
) -> std::vec::Vec<Result<M, FrameError>> {
    let mut out = std::vec::Vec::new();
    for piece in pieces {
        let mut input: &[u8] = piece;
        while let Some(item) = decoder.decode_next::<M>(&mut input) {
            out.push(item);
        }
        assert!(input.is_empty());
    }
    out
}

/// Whether two messages are the same bit for bit (NaN payloads included), by their frames.
pub fn same<M: serde::Serialize>(a: &M, b: &M) -> bool {
    frame_of(a) == frame_of(b)
}
