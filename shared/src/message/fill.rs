//! Deserialising the large messages' vectors in the place they end up.
//!
//! serde's derived visitors build a vector in a local and return it by value: a message
//! holding a 1 KB vector (a policy chunk's values, a plant's settings) is copied several
//! times on its way out of the deserializer, and on a microcontroller that is stack the
//! receive loop must keep free. The hand-written `Deserialize` of
//! [`PolicyChunk`](super::PolicyChunk) and [`PlantParams`](super::PlantParams) creates the
//! message first and pushes the elements straight into its own vector with [`Fill`]. The
//! wire format is the derived one: a struct is its fields in order, a vector its length
//! then its elements. Only that form is read (postcard's; the protocol has no other): a
//! self-describing format's map of named fields is refused.

use core::fmt;

use heapless::Vec;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, Error, SeqAccess, Visitor};

/// Deserialises a sequence into the vector it borrows (appending to what it holds); more
/// than `N` elements is an error.
pub(crate) struct Fill<'v, T, const N: usize>(pub(crate) &'v mut Vec<T, N>);

impl<'de, T: Deserialize<'de>, const N: usize> DeserializeSeed<'de> for Fill<'_, T, N> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Fill<'_, T, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element()? {
            if self.0.push(value).is_err() {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
        }
        Ok(())
    }
}

/// Reads the next field of a struct, a sequence, into `vector` (see [`Fill`]), or the error
/// naming how many fields the struct has.
pub(crate) fn fill_field<'de, T: Deserialize<'de>, A: SeqAccess<'de>, const N: usize>(
    seq: &mut A,
    vector: &mut Vec<T, N>,
    index: usize,
    expected: &dyn serde::de::Expected,
) -> Result<(), A::Error> {
    seq.next_element_seed(Fill(vector))?
        .ok_or_else(|| A::Error::invalid_length(index, expected))
}

/// The next field of a struct read as a sequence, or the error naming how many it has.
pub(crate) fn field<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    index: usize,
    expected: &dyn serde::de::Expected,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| A::Error::invalid_length(index, expected))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use serde::{Deserialize, Serialize};
    use std::vec::Vec;

    use crate::message::{
        MAX_PARAM_SETTINGS, POLICY_CHUNK_VALUES, ParamRange, ParamSetting, PlantParams, PolicyChunk,
    };

    /// A policy chunk's derived twin with room for more values than a chunk may carry.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct DerivedChunk<const N: usize> {
        version: u32,
        offset: u32,
        values: heapless::Vec<f32, N>,
    }

    fn encode<M: Serialize>(message: &M) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        postcard::to_slice(message, &mut buf).unwrap().to_vec()
    }

    fn chunk_bytes<const N: usize>(count: usize) -> Vec<u8> {
        let mut values = heapless::Vec::<f32, N>::new();
        for i in 0..count {
            values.push(i as f32 * -0.25 + 3.0).unwrap();
        }
        let derived = DerivedChunk {
            version: 70_000,
            offset: 4_321,
            values,
        };
        encode(&derived)
    }

    #[test]
    fn a_chunk_reads_what_the_derived_twin_wrote_and_refuses_one_value_too_many() {
        for count in [0, 1, 17, POLICY_CHUNK_VALUES] {
            let bytes = chunk_bytes::<POLICY_CHUNK_VALUES>(count);
            let chunk: PolicyChunk = postcard::from_bytes(&bytes).unwrap();
            let twin: DerivedChunk<POLICY_CHUNK_VALUES> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!((chunk.version, chunk.offset), (twin.version, twin.offset));
            assert_eq!(chunk.values, twin.values);
            // And back: the derived serialisation gives the same bytes.
            assert_eq!(encode(&chunk), bytes);
        }
        let too_many = chunk_bytes::<{ POLICY_CHUNK_VALUES + 1 }>(POLICY_CHUNK_VALUES + 1);
        assert!(postcard::from_bytes::<PolicyChunk>(&too_many).is_err());
        // Cut short anywhere: an error, never a panic.
        let bytes = chunk_bytes::<POLICY_CHUNK_VALUES>(5);
        for end in 0..bytes.len() {
            assert!(postcard::from_bytes::<PolicyChunk>(&bytes[..end]).is_err());
        }
    }

    #[test]
    fn plant_params_round_trip_and_refuse_one_setting_too_many() {
        let setting = |i: usize| {
            let range = i.is_multiple_of(2).then_some(ParamRange {
                low: 0.5,
                high: 1.5,
            });
            ParamSetting::new("arm_mass", Some(i as f32), range).unwrap()
        };
        let mut params = PlantParams::default();
        for i in 0..MAX_PARAM_SETTINGS {
            params.settings.push(setting(i)).unwrap();
        }
        let bytes = encode(&params);
        assert_eq!(
            postcard::from_bytes::<PlantParams>(&bytes),
            Ok(params.clone())
        );

        #[derive(Serialize)]
        struct Wide {
            settings: heapless::Vec<ParamSetting, { MAX_PARAM_SETTINGS + 1 }>,
        }
        let mut wide = Wide {
            settings: heapless::Vec::new(),
        };
        for i in 0..=MAX_PARAM_SETTINGS {
            wide.settings.push(setting(i)).unwrap();
        }
        let bytes = encode(&wide);
        assert!(postcard::from_bytes::<PlantParams>(&bytes).is_err());
    }
}
