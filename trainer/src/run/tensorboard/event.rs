//! The protobuf messages of a TensorBoard event file that tether writes: the subset of
//! TensorFlow's `tensorflow.Event` and `tensorflow.Summary` that carries scalars.
//!
//! Field numbers follow TensorFlow's `event.proto` and `summary.proto`; fields tether never
//! writes are left out, which protobuf readers accept (absent fields take their defaults).

/// `tensorflow.Event`: one timestamped record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Wall-clock time of the event, seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step the event belongs to (tether: environment steps so far).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "EventKind", tags = "3, 5")]
    pub kind: Option<EventKind>,
}

/// The `what` oneof of `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventKind {
    /// The file format, `"brain.Event:2"`: the first event of every file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Summary values (here: scalars).
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: the values logged at one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// One entry per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with its `simple_value` (a scalar).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The series the value belongs to, e.g. `"rollout/ep_rew_mean"`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar. It is a member of a oneof in `summary.proto`, so it must be written even
    /// when it is 0 (a plain proto3 float would be left out, and readers would drop it):
    /// hence `optional`.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The file format every event file announces first.
pub const FILE_VERSION: &str = "brain.Event:2";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_zero_scalar_is_still_written() {
        let value = SummaryValue {
            tag: "a".into(),
            simple_value: Some(0.0),
        };
        // tag: field 1, length 1, "a"; simple_value: field 2 (fixed32), four zero bytes.
        assert_eq!(value.encode_to_vec(), [0x0a, 1, b'a', 0x15, 0, 0, 0, 0]);
    }

    #[test]
    fn events_round_trip() {
        let event = Event {
            wall_time: 1.7e9,
            step: 4096,
            kind: Some(EventKind::Summary(Summary {
                value: vec![SummaryValue {
                    tag: "train/kl".into(),
                    simple_value: Some(0.0123),
                }],
            })),
        };
        let bytes = event.encode_to_vec();
        assert_eq!(Event::decode(bytes.as_slice()).unwrap(), event);
        let version = Event {
            wall_time: 1.0,
            step: 0,
            kind: Some(EventKind::FileVersion(FILE_VERSION.into())),
        };
        // wall_time (9 bytes) and the 13-byte string (15 bytes): the 24 bytes every
        // TensorFlow event file starts with.
        assert_eq!(version.encode_to_vec().len(), 24);
    }
}
