//! Messages from the trainer to the device.

use heapless::Vec;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

use super::{POLICY_CHUNK_VALUES, PlantParams};
use crate::policy::PolicySpec;

/// Everything the host sends.
// No heap to box the large variants into: a message lives in one fixed-size value.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HostMessage {
    /// Opens the handshake; the device answers [`super::DeviceMessage::Hello`].
    Hello {
        /// The host's [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
    },
    /// Starts a policy upload into the device's inactive buffer.
    PolicyBegin(PolicyBegin),
    /// A run of consecutive parameter values.
    PolicyChunk(PolicyChunk),
    /// Ends an upload: the device checks it and makes it the running policy at the next
    /// episode boundary.
    PolicyCommit {
        /// The version named in [`PolicyBegin`].
        version: u32,
    },
    /// Starts running episodes.
    Run(RunCommand),
    /// Ends the current episode (reported as [`super::EpisodeEndReason::Stopped`]) and
    /// returns to idle with the plant in its safe state.
    Stop,
    /// Keeps the device's watchdog fed while nothing else is sent.
    Heartbeat {
        /// Increments with every heartbeat; echoed for round-trip measurements.
        sequence: u32,
    },
    /// Sets a simulated plant's parameters and per-episode ranges (replacing every earlier
    /// setting); they apply from the next episode on. A physical plant refuses it.
    PlantParams(PlantParams),
}

/// Announces a policy upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PolicyBegin {
    /// Version number the host gives this policy; transitions produced with it carry it.
    pub version: u32,
    /// Shape of the network.
    pub spec: PolicySpec,
    /// Number of f32 values that will follow; must equal `spec.param_count()`.
    pub len: u32,
    /// CRC-32 (ISO-HDLC, as [`crate::frame::PARAMS_CRC`]) of the values' little-endian bytes.
    pub crc: u32,
}

/// Consecutive parameter values of an upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PolicyChunk {
    /// The upload's version.
    pub version: u32,
    /// Index of the first value in the flat parameter vector.
    pub offset: u32,
    /// The values.
    pub values: Vec<f32, POLICY_CHUNK_VALUES>,
}

/// How the device picks actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RunMode {
    /// Sample from the policy's distribution (training).
    Explore,
    /// Take the mean (Gaussian) or the most likely choice (categorical) (evaluation).
    Deterministic,
}

/// Starts a run of episodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunCommand {
    /// Id of the first episode; later ones count up from it.
    pub first_episode: u32,
    /// Episodes to run, then go idle; 0 runs until [`HostMessage::Stop`].
    pub episodes: u32,
    /// Seeds the device's exploration noise and (for simulated plants) initial states, so a
    /// run reproduces.
    pub seed: u64,
    /// Sampling or deterministic actions.
    pub mode: RunMode,
}
