//! The record framing of TensorBoard event files (TensorFlow's TFRecord format).
//!
//! Every record is
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | `n`: payload length, `u64` little-endian |
//! | 4 | masked CRC-32C of those 8 length bytes, `u32` little-endian |
//! | n | the payload (here a protobuf `Event`) |
//! | 4 | masked CRC-32C of the payload, `u32` little-endian |
//!
//! The CRC is CRC-32C (Castagnoli, as in iSCSI), "masked" as TensorFlow does so that a CRC
//! of data that itself contains CRCs is not degenerate: rotate right by 15 bits and add
//! `0xa282_ead8` (wrapping).
//!
//! A file is a plain sequence of records. [`split_records`] walks one and stops at the first
//! record that is cut short or fails a CRC, reporting where: a crash can only tear the
//! record being written, and everything before it is still good.

use crc::{CRC_32_ISCSI, Crc};

/// CRC-32C, the checksum TFRecord uses.
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// Added to the rotated CRC by TensorFlow's masking.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes of framing around a payload: length, its CRC, and the payload's CRC.
pub const FRAMING_LEN: usize = 8 + 4 + 4;

/// TensorFlow's masked CRC-32C of `bytes`.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    CRC32C
        .checksum(bytes)
        .rotate_right(15)
        .wrapping_add(MASK_DELTA)
}

/// Appends `payload` to `out` as one framed record.
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let length = (payload.len() as u64).to_le_bytes();
    out.reserve(payload.len() + FRAMING_LEN);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
}

/// Why a file's records stop before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordDamage {
    /// The last record is cut short (a write interrupted by a crash).
    Truncated,
    /// A length or payload CRC does not match (the bytes were changed).
    BadChecksum,
}

/// The records of a file's bytes, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct SplitRecords<'a> {
    /// Payloads of the complete, checked records.
    pub payloads: Vec<&'a [u8]>,
    /// Bytes those records occupy from the start of the file.
    pub good_len: usize,
    /// Why the rest (`bytes[good_len..]`, non-empty) was not read, if anything is left.
    pub damage: Option<RecordDamage>,
}

/// Splits a file's bytes into record payloads, checking both CRCs of each, up to the first
/// damaged or incomplete record.
pub fn split_records(bytes: &[u8]) -> SplitRecords<'_> {
    let mut payloads = Vec::new();
    let mut at = 0;
    let damage = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        let Some((length, rest)) = rest.split_first_chunk::<8>() else {
            break Some(RecordDamage::Truncated);
        };
        let Some((length_crc, rest)) = rest.split_first_chunk::<4>() else {
            break Some(RecordDamage::Truncated);
        };
        if masked_crc32c(length) != u32::from_le_bytes(*length_crc) {
            break Some(RecordDamage::BadChecksum);
        }
        // A length past the end of the file cannot be a complete record, whatever its size.
        let n = u64::from_le_bytes(*length);
        let Some(n) = usize::try_from(n).ok().filter(|&n| n <= rest.len()) else {
            break Some(RecordDamage::Truncated);
        };
        let (payload, rest) = rest.split_at(n);
        let Some((payload_crc, _)) = rest.split_first_chunk::<4>() else {
            break Some(RecordDamage::Truncated);
        };
        if masked_crc32c(payload) != u32::from_le_bytes(*payload_crc) {
            break Some(RecordDamage::BadChecksum);
        }
        payloads.push(payload);
        at += n + FRAMING_LEN;
    };
    SplitRecords {
        payloads,
        good_len: at,
        damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_and_its_mask_match_known_values() {
        // The standard CRC-32C check value.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b""), MASK_DELTA);
        // Every TensorFlow event file starts with a 24-byte `file_version` event, whose
        // framed length reads `18 00 00 00 00 00 00 00 a3 7f 4b 22`.
        let mut out = Vec::new();
        frame_record(&[0u8; 24], &mut out);
        assert_eq!(
            out[..12],
            [0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22]
        );
    }

    #[test]
    fn framing_is_length_crc_payload_crc() {
        let mut out = Vec::new();
        frame_record(b"abc", &mut out);
        assert_eq!(out.len(), 3 + FRAMING_LEN);
        assert_eq!(out[..8], 3u64.to_le_bytes());
        assert_eq!(out[8..12], masked_crc32c(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(out[15..], masked_crc32c(b"abc").to_le_bytes());
    }

    fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame_record(p, &mut out);
        }
        out
    }

    #[test]
    fn every_cut_keeps_the_records_before_it() {
        let payloads = vec![b"first".to_vec(), Vec::new(), vec![7u8; 40]];
        let bytes = framed(&payloads);
        let ends = [5 + FRAMING_LEN, 5 + 2 * FRAMING_LEN, bytes.len()];
        for cut in 0..bytes.len() {
            let split = split_records(&bytes[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(split.payloads.len(), whole, "cut at {cut}");
            assert_eq!(split.good_len, if whole == 0 { 0 } else { ends[whole - 1] });
            let expect = (split.good_len < cut).then_some(RecordDamage::Truncated);
            assert_eq!(split.damage, expect, "cut at {cut}");
        }
        let all = split_records(&bytes);
        assert_eq!(
            all.payloads,
            payloads.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!((all.good_len, all.damage), (bytes.len(), None));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let payloads = vec![b"one".to_vec(), b"two!".to_vec()];
        let bytes = framed(&payloads);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let split = split_records(&bad);
                // The records before the damaged one survive; the damaged one never does.
                let damaged_record = usize::from(i >= 3 + FRAMING_LEN);
                assert_eq!(split.payloads.len(), damaged_record, "byte {i} bit {bit}");
                assert!(split.damage.is_some(), "byte {i} bit {bit}");
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_overrun(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let split = split_records(&bytes);
            prop_assert!(split.good_len <= bytes.len());
            prop_assert_eq!(split.damage.is_some(), split.good_len < bytes.len());
            let framed: usize = split.payloads.iter().map(|p| p.len() + FRAMING_LEN).sum();
            prop_assert_eq!(framed, split.good_len);
        }

        #[test]
        fn random_payloads_round_trip(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)
        ) {
            let bytes = framed(&payloads);
            let split = split_records(&bytes);
            prop_assert_eq!(split.damage, None);
            prop_assert_eq!(split.good_len, bytes.len());
            let back: Vec<Vec<u8>> = split.payloads.iter().map(|p| p.to_vec()).collect();
            prop_assert_eq!(back, payloads);
        }
    }
}
