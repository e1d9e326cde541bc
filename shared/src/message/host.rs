//! Messages from the trainer to the device.

use core::fmt;

use heapless::Vec;
use postcard::experimental::max_size::MaxSize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::fill::{field, fill_field};
use super::recovery::{ReleaseMark, StepRange};
use super::{POLICY_CHUNK_VALUES, PlantParams};
use crate::plant::{ActionSpace, MAX_ACTION_DIM};
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
    /// Ends any run and starts observing: the plant stays in its safe state and the device
    /// sends a [`super::DeviceMessage::Observation`] every control period until `Stop`,
    /// `Hello` or `Run` (bring-up: `tether probe`). The watchdog stays on.
    Observe,
    /// While observing: applies a constant action for a bounded time, then the safe state
    /// again (bring-up: which way does each angle move?).
    Pulse(PulseCommand),
    /// Cumulative acknowledgement of transition data: the device may forget what it keeps
    /// for resending up to this mark.
    Release(ReleaseMark),
    /// Send again what was sent of this range (selective repeat); the device answers from
    /// its retransmit ring or with [`super::DeviceMessage::NotRetained`].
    Resend(StepRange),
    /// Transition batches carry at most `values` f32 values from now on (whole records; at
    /// least one record, at most [`super::TRANSITION_BATCH_VALUES`]): smaller frames survive
    /// a noisy line more often.
    BatchLimit {
        /// Most f32 values per batch.
        values: u16,
    },
    /// Selective acknowledgement: the host holds these steps of one episode (and its end
    /// report, when `to_step` is [`StepRange::TO_END`]) though an earlier stretch is still
    /// missing, so the cumulative [`HostMessage::Release`] cannot cover them yet. The device
    /// may forget the kept frames wholly inside the range: its retransmit ring does not
    /// fill with data the host already has while a lost stretch is asked for again.
    Received(StepRange),
}

/// The longest test pulse a device accepts, µs.
pub const MAX_PULSE_US: u32 = 500_000;

/// A test pulse's action may be at most this fraction of the plant's bound in each
/// dimension (of the larger of `|low|` and `|high|`).
pub const MAX_PULSE_FRACTION: f32 = 0.25;

/// A bounded test pulse (see [`HostMessage::Pulse`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PulseCommand {
    /// The action held during the pulse, in the plant's units (volts for the rotary
    /// pendulum); at most [`MAX_PULSE_FRACTION`] of its bound in each dimension.
    pub action: Vec<f32, MAX_ACTION_DIM>,
    /// How long, µs; at most [`MAX_PULSE_US`].
    pub duration_us: u32,
}

impl PulseCommand {
    /// Whether the device may apply this pulse to a plant with action space `space`: a
    /// continuous space of the same dimension, every value finite and within
    /// [`MAX_PULSE_FRACTION`] of its bound, and a duration of 1 µs to [`MAX_PULSE_US`].
    pub fn check(&self, space: &ActionSpace) -> Result<(), PulseError> {
        let ActionSpace::Continuous { low, high } = space else {
            return Err(PulseError::Discrete);
        };
        if self.action.len() != low.len() {
            return Err(PulseError::Dimension);
        }
        if self.duration_us == 0 || self.duration_us > MAX_PULSE_US {
            return Err(PulseError::TooLong);
        }
        for ((&a, &lo), &hi) in self.action.iter().zip(low).zip(high) {
            let bound = MAX_PULSE_FRACTION * lo.abs().max(hi.abs());
            if !a.is_finite() || a.abs() > bound {
                return Err(PulseError::TooStrong);
            }
        }
        Ok(())
    }
}

/// Why a [`PulseCommand`] cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PulseError {
    /// The plant's actions are discrete choices, not values to hold.
    Discrete,
    /// The action has another dimension than the plant's.
    Dimension,
    /// Longer than [`MAX_PULSE_US`], or zero.
    TooLong,
    /// Above [`MAX_PULSE_FRACTION`] of the plant's bound, or not finite.
    TooStrong,
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

/// Consecutive parameter values of an upload. Deserialised by hand, into its own vector
/// (see [`super::fill`]): the wire format is the derived one.
#[derive(Clone, Debug, PartialEq, Serialize, MaxSize)]
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

impl<'de> Deserialize<'de> for PolicyChunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChunkVisitor;
        impl<'de> Visitor<'de> for ChunkVisitor {
            type Value = PolicyChunk;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy chunk")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PolicyChunk, A::Error> {
                let version = field(&mut seq, 0, &self)?;
                let offset = field(&mut seq, 1, &self)?;
                let mut chunk = PolicyChunk {
                    version,
                    offset,
                    values: Vec::new(),
                };
                fill_field(&mut seq, &mut chunk.values, 2, &self)?;
                Ok(chunk)
            }
        }
        const FIELDS: &[&str] = &["version", "offset", "values"];
        deserializer.deserialize_struct("PolicyChunk", FIELDS, ChunkVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(bound: f32) -> ActionSpace {
        ActionSpace::Continuous {
            low: Vec::from_slice(&[-bound]).unwrap(),
            high: Vec::from_slice(&[bound]).unwrap(),
        }
    }

    fn pulse(volts: f32, duration_us: u32) -> PulseCommand {
        PulseCommand {
            action: Vec::from_slice(&[volts]).unwrap(),
            duration_us,
        }
    }

    #[test]
    fn pulses_are_bounded_by_a_quarter_of_the_plant_and_half_a_second() {
        let qube = space(6.0);
        assert_eq!(pulse(1.5, 500_000).check(&qube), Ok(()));
        assert_eq!(pulse(-1.5, 1).check(&qube), Ok(()));
        assert_eq!(
            pulse(1.51, 300_000).check(&qube),
            Err(PulseError::TooStrong)
        );
        assert_eq!(
            pulse(f32::NAN, 300_000).check(&qube),
            Err(PulseError::TooStrong)
        );
        assert_eq!(pulse(1.0, 500_001).check(&qube), Err(PulseError::TooLong));
        assert_eq!(pulse(1.0, 0).check(&qube), Err(PulseError::TooLong));
        assert_eq!(
            pulse(0.1, 1000).check(&ActionSpace::Discrete { n: 2 }),
            Err(PulseError::Discrete)
        );
        let two_d = PulseCommand {
            action: Vec::from_slice(&[0.1, 0.1]).unwrap(),
            duration_us: 1000,
        };
        assert_eq!(two_d.check(&qube), Err(PulseError::Dimension));
    }
}
