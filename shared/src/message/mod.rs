//! The messages host and device exchange, one enum per direction.
//!
//! Every message is a plain serde type with bounded (heapless) fields, so each has a fixed
//! worst-case encoded size that [`crate::frame`] proves fits in one frame. See
//! `docs/PROTOCOL.md` for the conversation they make up.

mod device;
mod fill;
mod host;
mod plant_params;
mod record;
mod recovery;
mod upload;

pub use device::{
    AckTopic, DeviceInfo, DeviceMessage, DeviceState, EpisodeEnd, EpisodeEndReason, Heartbeat,
    LogLine, MAX_LOG_LEN, Observation, Refusal, RefusalReason, TransitionBatch,
};
pub use host::{
    HostMessage, MAX_PULSE_FRACTION, MAX_PULSE_US, PolicyBegin, PolicyChunk, PulseCommand,
    PulseError, RunCommand, RunMode,
};
pub use plant_params::{MAX_PARAM_NAME, MAX_PARAM_SETTINGS, ParamRange, ParamSetting, PlantParams};
pub use record::{RecordAction, RecordError, RecordLayout, TransitionRecord, TransitionRecords};
pub use recovery::{ReleaseMark, StepRange, episode_before};
pub use upload::{PolicyUpload, UploadStep, params_crc};

/// f32 values carried by one policy upload chunk (960 bytes of payload).
pub const POLICY_CHUNK_VALUES: usize = 240;
/// f32 values carried by one transition batch (960 bytes of payload).
pub const TRANSITION_BATCH_VALUES: usize = 240;
