//! Exported policies: the f32 parameters a device runs, in the shared wire layout.
//!
//! # `.bin` layout (all integers little-endian)
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `b"TETHERPL"` |
//! | 4 | format version, `u32` ([`PolicyFile::FORMAT_VERSION`]) |
//! | 4 | `s`: length of the encoded spec, `u32` |
//! | s | the [`PolicySpec`], postcard-encoded (as on the wire) |
//! | 4 | `n`: parameter count, `u32` (must equal the spec's `param_count()`) |
//! | 4n | the parameters, `f32` little-endian, in the order of [`tether_shared::policy`] |
//! | 4 | CRC-32/ISO-HDLC of every byte before it |
//!
//! The magic, version and CRC are the container every tether binary file shares
//! ([`crate::run::sealed`]), which also checks them.
//!
//! [`PolicyFile::to_rust_source`] writes the same policy as Rust items a firmware can
//! `include!` to boot with a trained policy and no host.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use postcard::experimental::max_size::MaxSize;
use tether_shared::PolicySpec;

use crate::run::atomic_write::{AtomicWriteError, write_atomic};
use crate::run::sealed::{SealError, SealedFormat, u32_at};

/// Why a policy file could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// Reading the file failed.
    #[error("cannot read policy {}: {source}", path.display())]
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
    /// The file does not start with the policy magic bytes.
    #[error(
        "{} is not a tether policy file (it does not start with \"TETHERPL\"); check the path",
        path.display()
    )]
    NotAPolicy {
        /// The file.
        path: PathBuf,
    },
    /// Another format version.
    #[error(
        "{} has policy format version {found}, this tether reads version {expected}; \
         re-export it with this version",
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
    /// The file ends before the length its header announces.
    #[error(
        "{} is truncated: {actual} bytes, expected {expected}; re-export the policy",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        actual: u64,
        /// Bytes needed (as far as the header could be read).
        expected: u64,
    },
    /// Bytes after the announced end.
    #[error("{} has {extra} unexpected bytes at the end; it is corrupted", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Extra bytes.
        extra: u64,
    },
    /// CRC mismatch: some byte changed.
    #[error(
        "{} is corrupted: CRC-32 {found:#010x} in the file, {computed:#010x} computed; \
         re-export the policy",
        path.display()
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// CRC in the file.
        found: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The policy itself is unusable: bad spec, count mismatch, non-finite parameter.
    #[error("policy {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A policy as a device runs it: its shape and its flat f32 parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFile {
    /// The network's shape; `params.len()` must equal `spec.param_count()`.
    pub spec: PolicySpec,
    /// Parameters in the order documented in [`tether_shared::policy`]; all finite.
    pub params: Vec<f32>,
}

impl PolicyFile {
    /// First bytes of every policy file.
    pub const MAGIC: [u8; 8] = *b"TETHERPL";
    /// Format version written and accepted by this build.
    pub const FORMAT_VERSION: u32 = 1;
    /// The container: the body is the spec's length and bytes, the parameter count and
    /// the parameters.
    const FORMAT: SealedFormat = SealedFormat {
        magic: Self::MAGIC,
        version: Self::FORMAT_VERSION,
        body_length: |body| {
            let spec = u64::from(u32_at(body, 0).ok_or(8u64)?);
            let count_at = usize::try_from(4 + spec).map_err(|_| u64::MAX)?;
            let count = u64::from(u32_at(body, count_at).ok_or(spec + 8)?);
            Ok(spec + 8 + 4 * count)
        },
    };

    /// Checks what a device would check: spec within protocol limits, parameter count
    /// matching the spec, every parameter finite. Returns the problem in words.
    pub fn check(&self) -> Result<(), String> {
        self.spec
            .validate(u32::MAX)
            .map_err(|e| format!("invalid spec {:?}: {e}", self.spec))?;
        let needed = self.spec.param_count();
        if self.params.len() != needed {
            return Err(format!(
                "{} parameters, but the spec needs {needed}",
                self.params.len()
            ));
        }
        if let Some((i, v)) = self.params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(format!(
                "parameter {i} is {v}; a device refuses non-finite parameters (the training \
                 diverged: resume from an earlier checkpoint)"
            ));
        }
        Ok(())
    }

    /// The `.bin` file contents; `path` only labels errors. Refuses a policy failing
    /// [`PolicyFile::check`].
    pub fn to_bin_bytes(&self, path: &Path) -> Result<Vec<u8>, PolicyFileError> {
        let invalid = |reason: String| PolicyFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        self.check().map_err(invalid)?;
        let mut spec_buf = [0u8; PolicySpec::POSTCARD_MAX_SIZE];
        let spec_bytes = postcard::to_slice(&self.spec, &mut spec_buf)
            .map_err(|e| invalid(format!("cannot encode spec: {e}")))?;
        let mut body = Vec::with_capacity(4 + spec_bytes.len() + 4 + 4 * self.params.len());
        body.extend_from_slice(&(spec_bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(spec_bytes);
        body.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for p in &self.params {
            body.extend_from_slice(&p.to_le_bytes());
        }
        Ok(Self::FORMAT.seal(&body))
    }

    /// Parses and verifies `.bin` contents; `path` only labels errors. Refuses a wrong
    /// magic or version, any length mismatch, a CRC mismatch, and a policy failing
    /// [`PolicyFile::check`].
    pub fn from_bin_bytes(path: &Path, bytes: &[u8]) -> Result<Self, PolicyFileError> {
        let p = || path.to_path_buf();
        let body = Self::FORMAT.open(bytes).map_err(|error| match error {
            SealError::Foreign => PolicyFileError::NotAPolicy { path: p() },
            SealError::Truncated { actual, expected } => PolicyFileError::Truncated {
                path: p(),
                actual,
                expected,
            },
            SealError::TrailingBytes { extra } => {
                PolicyFileError::TrailingBytes { path: p(), extra }
            }
            SealError::UnsupportedVersion { found } => PolicyFileError::UnsupportedVersion {
                path: p(),
                found,
                expected: Self::FORMAT_VERSION,
            },
            SealError::Corrupted { found, computed } => PolicyFileError::Corrupted {
                path: p(),
                found,
                computed,
            },
        })?;
        // The container checked the lengths these offsets come from.
        let invalid = |reason: String| PolicyFileError::Invalid { path: p(), reason };
        let count_at = 4 + u32_at(body, 0).unwrap_or(0) as usize;
        let spec = match postcard::take_from_bytes::<PolicySpec>(&body[4..count_at]) {
            Ok((spec, [])) => spec,
            Ok((_, rest)) => {
                return Err(invalid(format!(
                    "{} unexpected bytes after the spec",
                    rest.len()
                )));
            }
            Err(e) => return Err(invalid(format!("cannot decode spec: {e}"))),
        };
        let params = body[count_at + 4..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let policy = PolicyFile { spec, params };
        policy.check().map_err(invalid)?;
        Ok(policy)
    }

    /// Writes the policy to `path` atomically in the `.bin` layout.
    pub fn write_bin(&self, path: &Path) -> Result<(), PolicyFileError> {
        let bytes = self.to_bin_bytes(path)?;
        write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads and verifies a `.bin` policy file.
    pub fn read_bin(path: &Path) -> Result<Self, PolicyFileError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bin_bytes(path, &bytes)
    }

    /// Rust source a firmware can `include!` to carry this policy in flash.
    ///
    /// `name` becomes an upper-case identifier prefix (other characters than ASCII letters
    /// and digits become `_`; a leading digit gets a `_` in front; empty means `POLICY`).
    /// The source defines, for `NAME`:
    ///
    /// - `pub const NAME_PARAM_COUNT: usize`;
    /// - `pub const NAME_SPEC_POSTCARD: [u8; _]`: the spec, postcard-encoded, for
    ///   `postcard::from_bytes::<PolicySpec>` (the spec is also spelled out in a comment);
    /// - `pub static NAME_PARAMS: [f32; NAME_PARAM_COUNT]`: each value written with Rust's
    ///   shortest round-tripping literal (`{:?}`), so the compiled value has the same bits;
    ///   a non-finite value (which [`PolicyFile::check`] refuses) would be written as
    ///   `f32::from_bits(0x...)` to stay exact and compile.
    pub fn to_rust_source(&self, name: &str) -> String {
        let name = rust_const_name(name);
        let mut spec_buf = [0u8; PolicySpec::POSTCARD_MAX_SIZE];
        let spec_bytes: &[u8] = postcard::to_slice(&self.spec, &mut spec_buf).map_or(&[], |b| b);
        let s = &self.spec;
        let mut out = String::new();
        // Writing into a String cannot fail; the results are ignored below for that reason.
        let _ = writeln!(
            out,
            "// Policy `{name}` exported by tether. Generated file: do not edit, re-export.\n\
             //\n\
             // spec: obs_dim = {}, hidden = {:?}, head = {:?}, normalize_obs = {}\n\
             // parameters: {} f32 in the order documented in tether_shared::policy\n",
            s.obs_dim,
            s.hidden.as_slice(),
            s.head,
            s.normalize_obs,
            self.params.len(),
        );
        let _ = writeln!(
            out,
            "/// Number of parameters of the `{name}` policy.\n\
             pub const {name}_PARAM_COUNT: usize = {};\n",
            self.params.len()
        );
        let _ = writeln!(
            out,
            "/// Spec of the `{name}` policy, postcard-encoded \
             (`postcard::from_bytes::<PolicySpec>`).\n\
             pub const {name}_SPEC_POSTCARD: [u8; {}] = {:?};\n",
            spec_bytes.len(),
            spec_bytes
        );
        let _ = writeln!(
            out,
            "/// Parameters of the `{name}` policy.\n\
             #[allow(clippy::approx_constant, clippy::excessive_precision, clippy::unreadable_literal)]\n\
             pub static {name}_PARAMS: [f32; {name}_PARAM_COUNT] = ["
        );
        for row in self.params.chunks(6) {
            out.push_str("   ");
            for v in row {
                if v.is_finite() {
                    let _ = write!(out, " {v:?},");
                } else {
                    let _ = write!(out, " f32::from_bits({:#010x}),", v.to_bits());
                }
            }
            out.push('\n');
        }
        out.push_str("];\n");
        out
    }
}

/// `name` as an upper-case Rust identifier prefix.
fn rust_const_name(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        id = "POLICY".into();
    } else if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;
    use proptest::prelude::*;
    use tether_shared::PolicyHead;
    use tether_shared::frame::PARAMS_CRC;

    fn small_policy() -> PolicyFile {
        let spec = PolicySpec {
            obs_dim: 3,
            hidden: [4].into_iter().collect(),
            head: PolicyHead::Gaussian { action_dim: 1 },
            normalize_obs: true,
        };
        let n = spec.param_count();
        let mut params: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        params[0] = -0.0;
        params[1] = f32::MIN_POSITIVE / 8.0; // subnormal
        params[2] = f32::MAX;
        params[3] = std::f32::consts::PI;
        PolicyFile { spec, params }
    }

    /// Parses the `NAME_PARAMS` array back out of generated source.
    fn parse_params(src: &str, name: &str) -> Vec<f32> {
        let start = src
            .find(&format!("pub static {name}_PARAMS"))
            .expect("params item");
        let body = &src[start..];
        let open = body.find("= [").unwrap() + 3;
        let close = body.find("];").unwrap();
        body[open..close]
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.strip_prefix("f32::from_bits(") {
                Some(hex) => {
                    let hex = hex.trim_end_matches(')').trim_start_matches("0x");
                    f32::from_bits(u32::from_str_radix(hex, 16).unwrap())
                }
                None => t.parse::<f32>().unwrap_or_else(|e| panic!("{t:?}: {e}")),
            })
            .collect()
    }

    fn f32_bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn bin_round_trips_through_a_file() {
        let dir = TestDir::new("export-rt");
        let path = dir.join("policy.bin");
        let p = small_policy();
        p.write_bin(&path).unwrap();
        let back = PolicyFile::read_bin(&path).unwrap();
        assert_eq!(back.spec, p.spec);
        assert_eq!(f32_bits(&back.params), f32_bits(&p.params));
    }

    #[test]
    fn bin_layout_matches_documentation() {
        let p = small_policy();
        let bytes = p.to_bin_bytes(Path::new("p.bin")).unwrap();
        assert_eq!(&bytes[..8], b"TETHERPL");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let s = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let spec: PolicySpec = postcard::from_bytes(&bytes[16..16 + s]).unwrap();
        assert_eq!(spec, p.spec);
        let n = u32::from_le_bytes(bytes[16 + s..20 + s].try_into().unwrap()) as usize;
        assert_eq!(n, p.params.len());
        let first = f32::from_le_bytes(bytes[20 + s..24 + s].try_into().unwrap());
        assert_eq!(first.to_bits(), p.params[0].to_bits());
        assert_eq!(bytes.len(), 8 + 4 + 4 + s + 4 + 4 * n + 4);
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        assert_eq!(crc, PARAMS_CRC.checksum(&bytes[..bytes.len() - 4]));
    }

    #[test]
    fn every_truncation_and_flipped_bit_is_refused() {
        let path = Path::new("/runs/r/policy.bin");
        let bytes = small_policy().to_bin_bytes(path).unwrap();
        for len in 0..bytes.len() {
            let err = PolicyFile::from_bin_bytes(path, &bytes[..len]).unwrap_err();
            assert!(
                matches!(err, PolicyFileError::Truncated { .. }),
                "length {len}: {err}"
            );
            assert!(err.to_string().contains("/runs/r/policy.bin"));
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    PolicyFile::from_bin_bytes(path, &bad).is_err(),
                    "byte {i} bit {bit} accepted"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(matches!(
            PolicyFile::from_bin_bytes(path, &longer),
            Err(PolicyFileError::TrailingBytes { extra: 2, .. })
        ));
        assert!(matches!(
            PolicyFile::from_bin_bytes(path, b"TETHERCK\x01\x00\x00\x00"),
            Err(PolicyFileError::NotAPolicy { .. })
        ));
    }

    #[test]
    fn invalid_policies_are_not_written() {
        let dir = TestDir::new("export-invalid");
        let path = dir.join("policy.bin");
        let mut p = small_policy();
        p.params.pop();
        let err = p.write_bin(&path).unwrap_err();
        assert!(err.to_string().contains("spec needs"), "{err}");
        let mut p = small_policy();
        p.params[5] = f32::NAN;
        let err = p.write_bin(&path).unwrap_err();
        assert!(err.to_string().contains("parameter 5"), "{err}");
        let mut p = small_policy();
        p.spec.obs_dim = 0;
        assert!(matches!(
            p.write_bin(&path),
            Err(PolicyFileError::Invalid { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn missing_file_error_names_path() {
        let err = PolicyFile::read_bin(Path::new("/nonexistent/policy.bin")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/policy.bin"));
    }

    #[test]
    fn rust_source_defines_items_and_round_trips_exactly() {
        let p = small_policy();
        let src = p.to_rust_source("pendulum-v1");
        let n = p.params.len();
        assert!(src.contains(&format!("pub const PENDULUM_V1_PARAM_COUNT: usize = {n};")));
        assert!(src.contains("pub static PENDULUM_V1_PARAMS: [f32; PENDULUM_V1_PARAM_COUNT]"));
        assert!(src.contains("// spec: obs_dim = 3, hidden = [4]"), "{src}");
        let back = parse_params(&src, "PENDULUM_V1");
        assert_eq!(f32_bits(&back), f32_bits(&p.params));
        // The embedded spec bytes decode to the spec.
        let line = src
            .lines()
            .find(|l| l.starts_with("pub const PENDULUM_V1_SPEC_POSTCARD"))
            .unwrap();
        let list = &line[line.find("= [").unwrap() + 3..line.rfind(']').unwrap()];
        let spec_bytes: Vec<u8> = list.split(',').map(|t| t.trim().parse().unwrap()).collect();
        assert_eq!(
            postcard::from_bytes::<PolicySpec>(&spec_bytes).unwrap(),
            p.spec
        );
    }

    #[test]
    fn rust_source_writes_non_finite_values_as_bits() {
        let mut p = small_policy();
        p.params[4] = f32::NEG_INFINITY;
        p.params[6] = f32::from_bits(0x7fc0_1234);
        let src = p.to_rust_source("x");
        assert!(src.contains("f32::from_bits(0xff800000)"), "{src}");
        assert_eq!(f32_bits(&parse_params(&src, "X")), f32_bits(&p.params));
    }

    #[test]
    fn const_names_are_identifiers() {
        assert_eq!(rust_const_name("pendulum"), "PENDULUM");
        assert_eq!(rust_const_name("qube v2.1"), "QUBE_V2_1");
        assert_eq!(rust_const_name("3dof"), "_3DOF");
        assert_eq!(rust_const_name(""), "POLICY");
    }

    fn any_policy() -> impl Strategy<Value = PolicyFile> {
        let head = prop_oneof![
            (1u8..=4).prop_map(|action_dim| PolicyHead::Gaussian { action_dim }),
            (2u8..=6).prop_map(|n| PolicyHead::Categorical { n }),
        ];
        (
            1u8..=6,
            prop::collection::vec(1u16..=8, 0..=3),
            head,
            any::<bool>(),
        )
            .prop_flat_map(|(obs_dim, hidden, head, normalize_obs)| {
                let spec = PolicySpec {
                    obs_dim,
                    hidden: hidden.iter().copied().collect(),
                    head,
                    normalize_obs,
                };
                let n = spec.param_count();
                let finite = prop_oneof![
                    any::<f32>().prop_filter("finite", |v| v.is_finite()),
                    (0u32..(1 << 23)).prop_map(f32::from_bits),
                    Just(-0.0f32),
                ];
                prop::collection::vec(finite, n).prop_map(move |params| PolicyFile {
                    spec: spec.clone(),
                    params,
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_policies_round_trip(p in any_policy()) {
            let path = Path::new("p.bin");
            let bytes = p.to_bin_bytes(path).unwrap();
            let back = PolicyFile::from_bin_bytes(path, &bytes).unwrap();
            prop_assert_eq!(&back.spec, &p.spec);
            prop_assert_eq!(f32_bits(&back.params), f32_bits(&p.params));
            let src = p.to_rust_source("p");
            prop_assert_eq!(f32_bits(&parse_params(&src, "P")), f32_bits(&p.params));
        }
    }
}
