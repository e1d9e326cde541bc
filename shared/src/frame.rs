//! Framing: how a message becomes bytes on the link and back.
//!
//! A frame is `COBS(postcard(message) ++ CRC-32(postcard bytes))` followed by `0x00`.
//! (Placeholder: the full encoder/decoder lands with the protocol work.)

/// CRC used for frames and for uploaded parameter blocks: CRC-32/ISO-HDLC (the common
/// "CRC-32" of zlib and Ethernet).
pub const PARAMS_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Largest encoded frame, terminator included, in bytes.
pub const MAX_FRAME_LEN: usize = 1024;
