//! Atomic, verifiable checkpoint files.
//!
//! # File layout (all integers little-endian)
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `b"TETHERCK"` |
//! | 4 | format version, `u32` ([`Checkpoint::FORMAT_VERSION`]) |
//! | 8 | payload length in bytes, `u64` |
//! | n | payload: the state, postcard-encoded |
//! | 4 | CRC-32/ISO-HDLC of every byte before it |
//!
//! The magic, version and CRC are the container every tether binary file shares
//! ([`crate::run::sealed`]), which also checks them.
//!
//! # Why postcard and not JSON
//!
//! Resume must be bit-exact. postcard stores each `f64` as its 8 little-endian bytes, so
//! every value — subnormals, `-0.0`, infinities, NaN payloads — comes back with the same
//! bits. `serde_json` cannot promise that: it writes non-finite floats as `null` (which then
//! fails to load), and without its `float_roundtrip` feature its parser may land one ulp off.
//!
//! The price: postcard is not self-describing, so the state type must serialize the same
//! shape it deserializes — no `#[serde(skip_serializing_if)]`, `flatten`, `untagged` enums
//! or `serde_json::Value` inside it. Plain structs, `Vec`s, options, enums and nalgebra
//! matrices are fine. A mismatch shows up as [`CheckpointError::Decode`] on load, which is
//! why a save followed by a load belongs in the learner's tests.
//!
//! # Atomicity
//!
//! [`Checkpoint::save`] goes through [`write_atomic`]: a crash leaves either the old
//! complete file or the new complete file, never a mix.

use std::fs;
use std::path::{Path, PathBuf};

use crate::run::atomic_write::{AtomicWriteError, write_atomic};
use crate::run::sealed::{SealError, SealedFormat, u64_at};
use serde::{Serialize, de::DeserializeOwned};

/// Why a checkpoint could not be saved or loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading the file failed.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// The file does not start with the checkpoint magic bytes.
    #[error(
        "{} is not a tether checkpoint (it does not start with \"TETHERCK\"); check the path",
        path.display()
    )]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a different checkpoint format version.
    #[error(
        "{} has checkpoint format version {found}, this tether reads version {expected}; \
         resume it with the tether version that wrote it",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The file is shorter than its header says (an interrupted copy or a full disk).
    #[error(
        "{} is truncated: {actual} bytes, expected {expected}; the checkpoint cannot be \
         used (restore a backup or start a new run)",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        actual: u64,
        /// Bytes the header announces (or the minimal header size).
        expected: u64,
    },
    /// The file is longer than its header says.
    #[error(
        "{} has {extra} unexpected bytes after the checkpoint; it is corrupted",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes beyond the announced end.
        extra: u64,
    },
    /// The CRC does not match: some byte changed since the file was written.
    #[error(
        "{} is corrupted: CRC-32 {found:#010x} in the file, {computed:#010x} computed; \
         the checkpoint cannot be trusted",
        path.display()
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// CRC stored in the file.
        found: u32,
        /// CRC of the bytes actually read.
        computed: u32,
    },
    /// The state could not be encoded.
    #[error("cannot encode the checkpoint for {}: {source}", path.display())]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: postcard::Error,
    },
    /// The payload is intact (CRC matches) but does not decode as the expected state type:
    /// the checkpoint was written by a build with a different state layout.
    #[error(
        "{} is intact but does not decode as this build's training state ({reason}); it was \
         probably written by a different tether version",
        path.display()
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
}

fn read_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The checkpoint file format; see the module documentation for the layout.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint;

impl Checkpoint {
    /// First bytes of every checkpoint file.
    pub const MAGIC: [u8; 8] = *b"TETHERCK";
    /// Format version written by this build. Earlier versions are read by
    /// [`Checkpoint::load_or_upgrade`] through the state type's [`Upgradable`] layouts
    /// (for a run: 1, when the learner's settings still held the run's seed and step
    /// counts; 2, before the gSDE settings).
    pub const FORMAT_VERSION: u32 = 3;
    /// The container: the body is the payload length (`u64`) and the payload.
    const FORMAT: SealedFormat = SealedFormat {
        magic: Self::MAGIC,
        version: Self::FORMAT_VERSION,
        body_length: |body| match u64_at(body, 0) {
            Some(payload) => Ok(payload.saturating_add(8)),
            None => Err(8),
        },
    };
    /// The same container as written by format `version`.
    const fn format(version: u32) -> SealedFormat {
        SealedFormat {
            version,
            ..Self::FORMAT
        }
    }

    /// Encodes `state` into the complete file contents (header, payload, CRC).
    ///
    /// `path` only labels errors.
    pub fn encode<T: Serialize>(path: &Path, state: &T) -> Result<Vec<u8>, CheckpointError> {
        let payload = postcard::to_allocvec(state).map_err(|source| CheckpointError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        let mut body = Vec::with_capacity(8 + payload.len());
        body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        body.extend_from_slice(&payload);
        Ok(Self::FORMAT.seal(&body))
    }

    /// Verifies complete file contents and decodes the state. `path` only labels errors.
    ///
    /// Refuses, in this order: a wrong magic, another format version, a length that does
    /// not match the header (truncated or trailing bytes), a CRC mismatch, and a payload
    /// that does not decode as `T` exactly (no bytes left over).
    pub fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, CheckpointError> {
        let body = Self::open(&Self::FORMAT, path, bytes)?;
        Self::decode_payload(path, body)
    }

    /// As [`Checkpoint::decode`], but a file of an earlier format version `T` knows
    /// ([`Upgradable::EARLIER_VERSIONS`]) is verified as that version's container and
    /// decoded through [`Upgradable::upgrade`].
    pub fn decode_or_upgrade<T: Upgradable>(
        path: &Path,
        bytes: &[u8],
    ) -> Result<T, CheckpointError> {
        match Self::open(&Self::FORMAT, path, bytes) {
            Err(CheckpointError::UnsupportedVersion { found, .. })
                if T::EARLIER_VERSIONS.contains(&found) =>
            {
                let body = Self::open(&Self::format(found), path, bytes)?;
                T::upgrade(found, &Payload { path, body })
            }
            opened => Self::decode_payload(path, opened?),
        }
    }

    /// The body of a sealed checkpoint, every check passed.
    fn open<'a>(
        format: &SealedFormat,
        path: &Path,
        bytes: &'a [u8],
    ) -> Result<&'a [u8], CheckpointError> {
        let p = || path.to_path_buf();
        format.open(bytes).map_err(|error| match error {
            SealError::Foreign => CheckpointError::NotACheckpoint { path: p() },
            SealError::Truncated { actual, expected } => CheckpointError::Truncated {
                path: p(),
                actual,
                expected,
            },
            SealError::TrailingBytes { extra } => {
                CheckpointError::TrailingBytes { path: p(), extra }
            }
            SealError::UnsupportedVersion { found } => CheckpointError::UnsupportedVersion {
                path: p(),
                found,
                expected: Self::FORMAT_VERSION,
            },
            SealError::Corrupted { found, computed } => CheckpointError::Corrupted {
                path: p(),
                found,
                computed,
            },
        })
    }

    /// Decodes a checked body's payload as `T`, exactly (no bytes left over).
    fn decode_payload<T: DeserializeOwned>(path: &Path, body: &[u8]) -> Result<T, CheckpointError> {
        match postcard::take_from_bytes::<T>(&body[8..]) {
            Ok((state, [])) => Ok(state),
            Ok((_, rest)) => Err(CheckpointError::Decode {
                path: path.to_path_buf(),
                reason: format!("{} bytes left over after the state", rest.len()),
            }),
            Err(e) => Err(CheckpointError::Decode {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// Saves `state` to `path` atomically (see [`write_atomic`]).
    pub fn save<T: Serialize>(path: &Path, state: &T) -> Result<(), CheckpointError> {
        let bytes = Self::encode(path, state)?;
        Ok(write_atomic(path, &bytes)?)
    }

    /// Loads and verifies the checkpoint at `path`; any truncation or changed byte is
    /// refused with an error naming the file.
    pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
        let bytes = fs::read(path).map_err(|e| read_err(path, e))?;
        Self::decode(path, &bytes)
    }

    /// As [`Checkpoint::load`], reading earlier format versions too (see
    /// [`Checkpoint::decode_or_upgrade`]).
    pub fn load_or_upgrade<T: Upgradable>(path: &Path) -> Result<T, CheckpointError> {
        let bytes = fs::read(path).map_err(|e| read_err(path, e))?;
        Self::decode_or_upgrade::<T>(path, &bytes)
    }
}

/// A state type that still reads the checkpoints of earlier format versions.
pub trait Upgradable: DeserializeOwned {
    /// The earlier format versions it reads.
    const EARLIER_VERSIONS: &'static [u32];

    /// The state from the verified payload of a checkpoint written by format `version`
    /// (one of [`Upgradable::EARLIER_VERSIONS`]): decode that version's layout with
    /// [`Payload::decode`], then convert.
    fn upgrade(version: u32, payload: &Payload<'_>) -> Result<Self, CheckpointError>;
}

/// The verified payload of an earlier-format checkpoint, for [`Upgradable::upgrade`].
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    path: &'a Path,
    body: &'a [u8],
}

impl Payload<'_> {
    /// Decodes the payload as `T` (an earlier layout), exactly: no bytes left over.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CheckpointError> {
        Checkpoint::decode_payload(self.path, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::sealed::u32_at;
    use crate::run::testdir::TestDir;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct State {
        iteration: u64,
        weights: Vec<f64>,
        name: String,
        best: Option<f64>,
    }

    fn sample_state() -> State {
        State {
            iteration: 42,
            weights: vec![
                0.1,
                -0.0,
                f64::MIN_POSITIVE / 3.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1.0 / 3.0,
                f64::MAX,
                -5e-324,
            ],
            name: "pendulum".into(),
            best: Some(f64::NEG_INFINITY),
        }
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn save_load_round_trips_bit_exactly() {
        let dir = TestDir::new("ck-roundtrip");
        let path = dir.join("checkpoint.bin");
        let mut state = sample_state();
        state.weights.push(f64::from_bits(0x7ff8_0000_dead_beef)); // NaN with a payload
        Checkpoint::save(&path, &state).unwrap();
        let back: State = Checkpoint::load(&path).unwrap();
        assert_eq!(bits(&back.weights), bits(&state.weights));
        assert_eq!(back.iteration, 42);
        assert_eq!(back.name, "pendulum");
        assert_eq!(back.best.map(f64::to_bits), state.best.map(f64::to_bits));
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("checkpoint.bin")]);
    }

    #[test]
    fn save_replaces_previous_checkpoint() {
        let dir = TestDir::new("ck-replace");
        let path = dir.join("checkpoint.bin");
        Checkpoint::save(&path, &1u64).unwrap();
        Checkpoint::save(&path, &2u64).unwrap();
        assert_eq!(Checkpoint::load::<u64>(&path).unwrap(), 2);
    }

    #[test]
    fn every_truncation_is_refused() {
        let path = Path::new("checkpoint.bin");
        let bytes = Checkpoint::encode(path, &sample_state()).unwrap();
        for len in 0..bytes.len() {
            let err = Checkpoint::decode::<State>(path, &bytes[..len]).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Truncated { .. }),
                "length {len}: {err}"
            );
            assert!(err.to_string().contains("checkpoint.bin"));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Checkpoint::decode::<State>(path, &longer),
            Err(CheckpointError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let path = Path::new("checkpoint.bin");
        let bytes = Checkpoint::encode(path, &sample_state()).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                let r = Checkpoint::decode::<State>(path, &bad);
                assert!(r.is_err(), "byte {i} bit {bit:#x} was accepted");
            }
        }
        // A change inside the payload is caught by the CRC specifically.
        let mut bad = bytes.clone();
        bad[SealedFormat::HEADER_LEN + 8 + 3] ^= 0x10; // inside the payload
        let err = Checkpoint::decode::<State>(path, &bad).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupted { .. }), "{err}");
    }

    #[test]
    fn large_checkpoint_refuses_sampled_truncations_and_flips() {
        let path = Path::new("big.bin");
        let state = State {
            iteration: 7,
            weights: (0..20_000).map(|i| (i as f64).sin()).collect(),
            name: String::new(),
            best: None,
        };
        let bytes = Checkpoint::encode(path, &state).unwrap();
        let n = bytes.len();
        for len in (0..n).step_by(997).chain(n - 30..n) {
            assert!(Checkpoint::decode::<State>(path, &bytes[..len]).is_err());
        }
        for i in (0..n).step_by(331).chain(n - 30..n) {
            let mut bad = bytes.clone();
            bad[i] = bad[i].wrapping_add(1);
            assert!(Checkpoint::decode::<State>(path, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn foreign_and_future_files_are_refused_with_clear_errors() {
        let path = Path::new("/runs/x/checkpoint.bin");
        let err = Checkpoint::decode::<u64>(path, b"{\"iteration\": 3}").unwrap_err();
        assert!(matches!(err, CheckpointError::NotACheckpoint { .. }));
        assert!(err.to_string().contains("/runs/x/checkpoint.bin"));

        let mut bytes = Checkpoint::encode(path, &Tens(3)).unwrap();
        bytes[8] = 4;
        let err = Checkpoint::decode::<u64>(path, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::UnsupportedVersion {
                    found: 4,
                    expected: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = Checkpoint::decode_or_upgrade::<Tens>(path, &bytes).unwrap_err();
        assert!(matches!(
            err,
            CheckpointError::UnsupportedVersion { found: 4, .. }
        ));
    }

    /// A state read from a `u64` that format 1 stored as `Old` and format 2 as a `u32`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Tens(u64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        a: u32,
        dropped: u8,
    }

    impl Upgradable for Tens {
        const EARLIER_VERSIONS: &'static [u32] = &[1, 2];

        fn upgrade(version: u32, payload: &Payload<'_>) -> Result<Self, CheckpointError> {
            match version {
                1 => payload
                    .decode::<Old>()
                    .map(|old| Tens(u64::from(old.a) * 10)),
                _ => payload.decode::<u32>().map(|v| Tens(u64::from(v) * 100)),
            }
        }
    }

    /// A file of an earlier format version decodes as that version's layout and converts;
    /// the current version decodes directly; `decode` alone refuses the old ones.
    #[test]
    fn earlier_format_versions_are_read_through_their_own_layouts() {
        let path = Path::new("checkpoint.bin");
        let seal = |version: u32, payload: Vec<u8>| {
            let mut body = (payload.len() as u64).to_le_bytes().to_vec();
            body.extend_from_slice(&payload);
            Checkpoint::format(version).seal(&body)
        };
        let v1 = seal(1, postcard::to_allocvec(&Old { a: 7, dropped: 1 }).unwrap());
        let v2 = seal(2, postcard::to_allocvec(&9u32).unwrap());
        assert_eq!(u32_at(&v1, 8), Some(1));
        assert_eq!(
            Checkpoint::decode_or_upgrade::<Tens>(path, &v1).unwrap(),
            Tens(70)
        );
        assert_eq!(
            Checkpoint::decode_or_upgrade::<Tens>(path, &v2).unwrap(),
            Tens(900)
        );
        assert!(matches!(
            Checkpoint::decode::<Tens>(path, &v1),
            Err(CheckpointError::UnsupportedVersion { found: 1, .. })
        ));
        let current = Checkpoint::encode(path, &Tens(5)).unwrap();
        assert_eq!(
            Checkpoint::decode_or_upgrade::<Tens>(path, &current).unwrap(),
            Tens(5)
        );
        let mut corrupted = v1.clone();
        corrupted[20] ^= 1;
        assert!(matches!(
            Checkpoint::decode_or_upgrade::<Tens>(path, &corrupted),
            Err(CheckpointError::Corrupted { .. })
        ));
        // A payload that is not the version's layout is a decode error naming the file.
        let wrong = seal(
            2,
            postcard::to_allocvec(&(1u8, 2u8, 3u8, 4u8, 5u8, 6u8)).unwrap(),
        );
        assert!(matches!(
            Checkpoint::decode_or_upgrade::<Tens>(path, &wrong),
            Err(CheckpointError::Decode { .. })
        ));
    }

    #[test]
    fn intact_file_of_another_type_is_a_decode_error() {
        let path = Path::new("checkpoint.bin");
        let bytes = Checkpoint::encode(path, &(1u8, 2u8, 3u8)).unwrap();
        let err = Checkpoint::decode::<u8>(path, &bytes).unwrap_err();
        assert!(matches!(err, CheckpointError::Decode { .. }), "{err}");
        let err = Checkpoint::decode::<State>(path, &bytes).unwrap_err();
        assert!(matches!(err, CheckpointError::Decode { .. }), "{err}");
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = TestDir::new("ck-missing");
        let path = dir.join("nope.bin");
        let err = Checkpoint::load::<u64>(&path).unwrap_err();
        assert!(err.to_string().contains("nope.bin"), "{err}");
    }

    #[test]
    fn saving_into_a_missing_directory_is_a_write_error_naming_it() {
        let dir = TestDir::new("ck-nodir");
        let path = dir.join("missing/sub/checkpoint.bin");
        let err = Checkpoint::save(&path, &3u64).unwrap_err();
        assert!(matches!(err, CheckpointError::Write(_)), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!path.exists());
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            (0u64..(1 << 52)).prop_map(f64::from_bits), // positive subnormals
            (0u64..(1 << 52)).prop_map(|m| f64::from_bits(m | (1 << 63))), // negative ones
            Just(-0.0),
            Just(0.0),
            any::<f64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_f64_vectors_round_trip_bit_exactly(v in prop::collection::vec(any_f64(), 0..200)) {
            let path = Path::new("p.bin");
            let bytes = Checkpoint::encode(path, &v).unwrap();
            let back: Vec<f64> = Checkpoint::decode(path, &bytes).unwrap();
            prop_assert_eq!(bits(&back), bits(&v));
        }
    }
}
