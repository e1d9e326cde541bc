//! Messages from the device to the trainer.

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

use super::TRANSITION_BATCH_VALUES;
use super::recovery::StepRange;
use crate::plant::{MAX_ACTION_DIM, MAX_OBS_DIM, PlantDescription};
use crate::version::FirmwareVersion;

/// Longest log line, in bytes of UTF-8.
pub const MAX_LOG_LEN: usize = 96;

/// Everything the device sends.
// No heap to box the large variants into: a message lives in one fixed-size value.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceMessage {
    /// Answers [`super::HostMessage::Hello`].
    Hello(DeviceInfo),
    /// A command was carried out.
    Ack(AckTopic),
    /// A command was refused; nothing changed on the device.
    Refused(Refusal),
    /// Consecutive transitions of one episode.
    Transitions(TransitionBatch),
    /// An episode is over.
    EpisodeEnd(EpisodeEnd),
    /// The device is alive; sent periodically.
    Heartbeat(Heartbeat),
    /// Free text for the user (never parsed by the host).
    Log(LogLine),
    /// What the plant measures now, once per control period while observing.
    Observation(Observation),
    /// Answers a [`super::HostMessage::Resend`]: the device no longer holds (some of) what
    /// it sent of this range, or the range was never sent; the host stops asking for it.
    NotRetained(StepRange),
}

/// One observation sent while observing (see [`super::HostMessage::Observe`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Observation {
    /// Microseconds since the device started (wraps after ~71 minutes).
    pub uptime_us: u32,
    /// The observation, in the plant's layout.
    pub values: Vec<f32, MAX_OBS_DIM>,
    /// Whether a test pulse was being applied during the period that led here.
    pub pulsing: bool,
}

/// What the device tells the host in the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceInfo {
    /// The device's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Firmware release.
    pub firmware_version: FirmwareVersion,
    /// The plant it controls.
    pub plant: PlantDescription,
    /// Most f32 policy parameters the device can hold (per buffer).
    pub policy_capacity: u32,
    /// Version of the policy it runs now, if any.
    pub active_policy: Option<u32>,
    /// The device's action rate limit (a safety setting of its firmware): the largest
    /// change of each continuous action dimension from one control step to the next, in
    /// action units; empty when the device has none (protocol version 2).
    pub action_rate_limit: Vec<f32, MAX_ACTION_DIM>,
}

/// Which command an [`DeviceMessage::Ack`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AckTopic {
    /// Upload `version` started.
    PolicyBegin {
        /// Upload version.
        version: u32,
    },
    /// Values up to (not including) `received` are stored.
    PolicyChunk {
        /// Upload version.
        version: u32,
        /// Values stored so far.
        received: u32,
    },
    /// Upload `version` passed every check; it runs from the next episode on.
    PolicyCommit {
        /// Upload version.
        version: u32,
    },
    /// Episodes are starting.
    Run,
    /// The device is idle, the plant in its safe state.
    Stop,
    /// The plant's parameters are set: `count` settings, in effect from the next episode.
    /// In a [`Refusal`], `count` is the index of the first setting refused (0 when the
    /// plant takes no parameters at all).
    PlantParams {
        /// Settings applied, or the index of the refused one.
        count: u8,
    },
    /// The device observes (see [`super::HostMessage::Observe`]).
    Observe,
    /// The test pulse started.
    Pulse,
}

/// A refused command and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refusal {
    /// The command refused, named like its acknowledgement.
    pub topic: AckTopic,
    /// Why.
    pub reason: RefusalReason,
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RefusalReason {
    /// The host speaks another protocol version.
    ProtocolVersion,
    /// The spec has more parameters than the device holds.
    OverCapacity,
    /// The spec's sizes are outside the protocol's limits.
    BadSpec,
    /// The spec's observation or action does not match the plant.
    PlantMismatch,
    /// Declared length and spec disagree.
    LengthMismatch,
    /// A chunk or commit for an upload that was not begun, or a chunk not at the next offset.
    OutOfOrder,
    /// Commit before every value arrived.
    Incomplete,
    /// The uploaded values' CRC differs from the declared one.
    BadCrc,
    /// A NaN or infinite parameter (or a log-std outside ±20).
    NonFinite,
    /// Run without any committed policy.
    NoPolicy,
    /// The plant is in its safe state after a fault and refuses to run until reset.
    Faulted,
    /// A plant parameter the device's plant does not have.
    UnknownParam,
    /// A plant parameter's value or range outside what the plant can take (a negative mass,
    /// a latency beyond the device's buffer, a range with low > high, ...).
    BadParam,
    /// The plant takes no parameters: it is physical hardware (or a simulated rig started
    /// with fixed parameters), whose physics is its own.
    FixedPhysics,
    /// A test pulse above a quarter of the plant's bound, longer than 0.5 s, of the wrong
    /// dimension, or for a plant with discrete actions.
    PulseOutOfBounds,
    /// A test pulse while the device runs episodes (stop, then observe, first).
    Busy,
    /// The plant parameters' range end share is not a number in [0, 1].
    BadRangeEndShare,
}

/// Transitions of one episode, consecutive in step.
///
/// `values` holds records laid out as [`super::RecordLayout`] says (observation, action as
/// sampled, reward, log-probability; read them through [`TransitionBatch::records`], write
/// them with [`TransitionBatch::push_record`]). The host needs the unclamped action: it is
/// the one whose log-probability the learner differentiates. The flat layout keeps
/// per-value overhead at zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransitionBatch {
    /// Episode id.
    pub episode: u32,
    /// Step index (within the episode) of the first record.
    pub first_step: u32,
    /// Policy version that chose these actions.
    pub policy_version: u32,
    /// Records, flattened.
    pub values: Vec<f32, TRANSITION_BATCH_VALUES>,
}

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EpisodeEndReason {
    /// The plant reached a terminal state (fell, left the safe range): no bootstrap.
    Terminated,
    /// The episode step limit was reached: bootstrap from the final observation.
    Truncated,
    /// The host asked to stop: bootstrap from the final observation.
    Stopped,
    /// The link could not keep up and transitions were dropped: discard the episode.
    Overrun,
    /// A non-finite observation or action, or the watchdog fired: plant in safe state,
    /// discard the episode.
    Fault,
}

/// The summary sent when an episode ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EpisodeEnd {
    /// Episode id.
    pub episode: u32,
    /// Policy version that ran it.
    pub policy_version: u32,
    /// Steps taken.
    pub length: u32,
    /// Sum of rewards (undiscounted).
    pub episode_return: f32,
    /// How it ended.
    pub reason: EpisodeEndReason,
    /// Observation after the last step, for bootstrapping a truncated episode.
    pub final_obs: Vec<f32, MAX_OBS_DIM>,
    /// Longest control step, in microseconds.
    pub worst_step_us: u32,
    /// Control steps that started later than their deadline.
    pub missed_deadlines: u32,
    /// Control steps whose action the rate limit changed (protocol version 2).
    pub rate_limited_steps: u32,
}

impl EpisodeEnd {
    /// Worst-case frame length in bytes, terminator included, of an episode end.
    pub const MAX_FRAME_LEN: usize =
        crate::frame::max_frame_len(1 + <EpisodeEnd as MaxSize>::POSTCARD_MAX_SIZE);
}

/// What the device is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceState {
    /// Waiting for commands, plant safe.
    Idle,
    /// Running episodes.
    Running,
    /// Plant in its safe state after a fault or watchdog expiry.
    SafeStop,
    /// Streaming observations with the plant safe (bring-up), test pulses allowed.
    Observing,
}

/// Periodic sign of life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Heartbeat {
    /// Microseconds since the device started (wraps after ~71 minutes).
    pub uptime_us: u32,
    /// Current state.
    pub state: DeviceState,
    /// Sequence of the last host heartbeat seen.
    pub last_host_sequence: u32,
}

/// A line of text for the user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LogLine {
    /// The text (truncated to [`MAX_LOG_LEN`] bytes).
    pub text: String<MAX_LOG_LEN>,
}
