//! Sealed files: the container around every binary file tether writes (checkpoints,
//! exported policies), so each is recognised, versioned and verified the same way.
//!
//! # Layout (all integers little-endian)
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic, one per file kind ([`SealedFormat::magic`]) |
//! | 4 | format version, `u32` ([`SealedFormat::version`]) |
//! | n | body: its own layout, which announces its length in its first bytes |
//! | 4 | CRC-32/ISO-HDLC ([`PARAMS_CRC`]) of every byte before it |
//!
//! Opening checks, in this order: the magic (a file that is only a prefix of it is a
//! truncated file, anything else a foreign one), the version, the length the body
//! announces against the bytes present (truncated or trailing bytes), then the CRC. Only
//! then is the body handed back, so a cut or changed file is refused before any of it is
//! parsed.

use tether_shared::frame::PARAMS_CRC;

/// [`PARAMS_CRC`]'s algorithm with sixteen tables (16 KiB, a host can afford them) instead
/// of the device's one: the same checksum, several times faster over a checkpoint of a few
/// hundred kilobytes, which is sealed after every iteration.
const FILE_CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(PARAMS_CRC.algorithm);

/// What is wrong with a sealed file. The file kinds wrap it with the path and a remedy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// The file does not start with the kind's magic bytes.
    Foreign,
    /// Fewer bytes than the header and body announce (or than the fixed parts).
    Truncated {
        /// Bytes present.
        actual: u64,
        /// Bytes needed, as far as the announced lengths could be read.
        expected: u64,
    },
    /// More bytes than the body announces.
    TrailingBytes {
        /// Bytes beyond the announced end.
        extra: u64,
    },
    /// Another format version.
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
    },
    /// The CRC does not match: some byte changed since the file was written.
    Corrupted {
        /// CRC stored in the file.
        found: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
}

/// Reads the total body length from the start of a body: `Ok(length)` once the bytes that
/// announce it are present, else `Err(bytes needed to read it)`. Given everything after
/// the header, CRC included when present.
pub type BodyLength = fn(&[u8]) -> Result<u64, u64>;

/// One kind of sealed file.
#[derive(Clone, Copy, Debug)]
pub struct SealedFormat {
    /// First bytes of every file of this kind.
    pub magic: [u8; 8],
    /// Format version written and accepted by this build.
    pub version: u32,
    /// How a body announces its length.
    pub body_length: BodyLength,
}

impl SealedFormat {
    /// Bytes before the body: magic and version.
    pub const HEADER_LEN: usize = 8 + 4;
    /// Bytes after the body: the CRC.
    pub const TRAILER_LEN: usize = 4;

    /// The complete file: header, `body`, CRC.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::HEADER_LEN + body.len() + Self::TRAILER_LEN);
        bytes.extend_from_slice(&self.magic);
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(body);
        let crc = FILE_CRC.checksum(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Verifies a complete file (see the module documentation for the order of the checks)
    /// and returns its body.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], SealError> {
        let actual = bytes.len() as u64;
        let fixed = (Self::HEADER_LEN + Self::TRAILER_LEN) as u64;
        let truncated = |body: u64| SealError::Truncated {
            actual,
            expected: fixed.saturating_add(body),
        };
        let shortest_body = match (self.body_length)(&[]) {
            Ok(length) | Err(length) => length,
        };
        if !bytes.starts_with(&self.magic) {
            return Err(match self.magic.starts_with(bytes) {
                true => truncated(shortest_body),
                false => SealError::Foreign,
            });
        }
        let Some(version) = bytes.get(8..Self::HEADER_LEN) else {
            return Err(truncated(shortest_body));
        };
        let found = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
        if found != self.version {
            return Err(SealError::UnsupportedVersion { found });
        }
        let body_length = (self.body_length)(&bytes[Self::HEADER_LEN..]).map_err(truncated)?;
        let expected = fixed.saturating_add(body_length);
        if actual < expected {
            return Err(truncated(body_length));
        }
        if actual > expected {
            return Err(SealError::TrailingBytes {
                extra: actual - expected,
            });
        }
        let (sealed, crc) = bytes.split_at(bytes.len() - Self::TRAILER_LEN);
        let found = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = FILE_CRC.checksum(sealed);
        if found != computed {
            return Err(SealError::Corrupted { found, computed });
        }
        Ok(&sealed[Self::HEADER_LEN..])
    }
}

/// The little-endian `u32` at `at`, if the bytes are there.
pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The little-endian `u64` at `at`, if the bytes are there.
pub fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut le = [0u8; 8];
    le.copy_from_slice(b);
    Some(u64::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A test kind whose body is a `u32` length followed by that many bytes.
    const FORMAT: SealedFormat = SealedFormat {
        magic: *b"TETHERTS",
        version: 3,
        body_length: |body| match u32_at(body, 0) {
            Some(n) => Ok(4 + u64::from(n)),
            None => Err(4),
        },
    };

    fn body(content: &[u8]) -> Vec<u8> {
        let mut body = (content.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(content);
        body
    }

    #[test]
    fn the_file_checksum_is_the_parameters_checksum() {
        // Every length from 0 to past two 16-byte strides, over bytes that are not all alike.
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for end in 0..bytes.len() {
            let data = &bytes[..end];
            assert_eq!(
                FILE_CRC.checksum(data),
                PARAMS_CRC.checksum(data),
                "{end} bytes"
            );
        }
    }

    #[test]
    fn sealed_bodies_open_unchanged() {
        for content in [&b""[..], b"x", b"some longer content \0 with a zero"] {
            let sealed = FORMAT.seal(&body(content));
            assert_eq!(sealed.len(), 12 + 4 + content.len() + 4);
            assert_eq!(FORMAT.open(&sealed), Ok(&body(content)[..]));
        }
    }

    #[test]
    fn every_cut_is_truncated_and_names_the_full_length_once_known() {
        let sealed = FORMAT.seal(&body(b"0123456789"));
        for len in 0..sealed.len() {
            let expected = if len < 16 { 20 } else { sealed.len() as u64 };
            assert_eq!(
                FORMAT.open(&sealed[..len]),
                Err(SealError::Truncated {
                    actual: len as u64,
                    expected
                }),
                "cut at {len}"
            );
        }
        let mut longer = sealed.clone();
        longer.extend_from_slice(b"ab");
        assert_eq!(
            FORMAT.open(&longer),
            Err(SealError::TrailingBytes { extra: 2 })
        );
    }

    #[test]
    fn foreign_files_and_other_versions_are_named_as_such() {
        assert_eq!(FORMAT.open(b"{\"json\": true}"), Err(SealError::Foreign));
        assert_eq!(FORMAT.open(b"TETHERCK"), Err(SealError::Foreign));
        let mut sealed = FORMAT.seal(&body(b"abc"));
        sealed[8] = 4;
        assert_eq!(
            FORMAT.open(&sealed),
            Err(SealError::UnsupportedVersion { found: 4 })
        );
    }

    proptest! {
        /// Any changed byte is refused, whichever check catches it.
        #[test]
        fn any_changed_byte_is_refused(
            content in prop::collection::vec(any::<u8>(), 0..64),
            at in any::<prop::sample::Index>(),
            change in 1u8..=255,
        ) {
            let mut sealed = FORMAT.seal(&body(&content));
            let i = at.index(sealed.len());
            sealed[i] ^= change;
            prop_assert!(FORMAT.open(&sealed).is_err());
        }
    }
}
