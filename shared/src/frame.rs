//! Framing: how a message becomes bytes on the link and back.
//!
//! A frame is `COBS(postcard(message) ++ CRC-32(postcard bytes))` followed by one `0x00`.
//! COBS removes every zero from the body, so `0x00` only ever ends a frame: a decoder that
//! loses its place (a dropped or corrupted byte, garbage on the line, a device reset) finds
//! the next frame at the next zero and loses at most the frame the fault landed in.
//!
//! Encoding serialises with postcard into a stack buffer, appends the CRC computed over the
//! whole body at once, and COBS-encodes the result in one pass over runs of bytes — the same
//! bytes as postcard's own flavors (CRC inside COBS) produce, at a fraction of their
//! per-byte cost, which matters for the transition batches a device sends every few
//! control steps. Decoding cannot use postcard's
//! `CobsAccumulator` directly, because it deserializes without checking a CRC; so
//! [`FrameDecoder`] keeps its own fixed buffer, splits the stream at zeros, COBS-decodes in
//! place with the `cobs` crate postcard itself uses, and deserializes through postcard's
//! CRC-32 flavor, rejecting trailing bytes.

use postcard::de_flavors::{Slice, crc::CrcModifier};
use postcard::experimental::max_size::MaxSize;
use serde::{Serialize, de::DeserializeOwned};

use crate::message::{DeviceMessage, HostMessage};

/// CRC used for frames and for uploaded parameter blocks: CRC-32/ISO-HDLC (the common
/// "CRC-32" of zlib and Ethernet).
pub const PARAMS_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Largest encoded frame, terminator included, in bytes (fits USB full-speed CDC buffers).
pub const MAX_FRAME_LEN: usize = 1024;

/// Bytes of CRC-32 appended to the postcard bytes of every frame.
pub const CRC_LEN: usize = 4;

/// Worst-case encoded length in bytes, terminator included, of a frame whose postcard
/// encoding is at most `postcard_len` bytes.
///
/// COBS adds one code byte per started run of 254 bytes; this bound (`n + n / 254 + 1`) is
/// the textbook one and never below what the `cobs` crate can emit. Add one byte for the
/// `0x00` terminator.
pub const fn max_frame_len(postcard_len: usize) -> usize {
    let body = postcard_len + CRC_LEN;
    let cobs = body + body / 254 + 1;
    let bound = cobs::max_encoding_length(body);
    let cobs = if bound > cobs { bound } else { cobs };
    cobs + 1
}

/// Worst-case encoded length in bytes of any [`HostMessage`] frame, terminator included
/// (a full [`crate::message::PolicyChunk`] with maximal varints). Size host-to-device
/// buffers from it.
pub const MAX_HOST_FRAME: usize = max_frame_len(HostMessage::POSTCARD_MAX_SIZE);

/// Worst-case encoded length in bytes of any [`DeviceMessage`] frame, terminator included
/// (a full [`crate::message::TransitionBatch`] with maximal varints). Size device-to-host
/// buffers (the firmware's outgoing ring) from it.
pub const MAX_DEVICE_FRAME: usize = max_frame_len(DeviceMessage::POSTCARD_MAX_SIZE);

// The size proof: every message, at the largest capacities, fits one frame.
const _: () = assert!(
    MAX_HOST_FRAME <= MAX_FRAME_LEN,
    "HostMessage may exceed MAX_FRAME_LEN"
);
const _: () = assert!(
    MAX_DEVICE_FRAME <= MAX_FRAME_LEN,
    "DeviceMessage may exceed MAX_FRAME_LEN"
);

/// Why a frame could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The output buffer is too small for the encoded frame.
    BufferTooSmall,
    /// More bytes arrived before a `0x00` than a frame may hold; they were dropped.
    Overflow,
    /// The COBS encoding is broken (a corrupted or lost byte).
    Cobs,
    /// The CRC does not match: the frame was corrupted on the way.
    BadCrc,
    /// The CRC matched but the bytes are not a known message (unknown tag, trailing bytes,
    /// out-of-range value): a peer speaking another protocol.
    Undecodable,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::BufferTooSmall => "frame does not fit the output buffer",
            FrameError::Overflow => "frame longer than the receive buffer",
            FrameError::Cobs => "broken COBS encoding",
            FrameError::BadCrc => "CRC mismatch",
            FrameError::Undecodable => "CRC valid but not a known message",
        })
    }
}

/// Encodes `message` as one complete frame (terminator included) into `buf` and returns the
/// written part.
///
/// Uses [`MAX_FRAME_LEN`] bytes of stack for the unencoded body; a message whose postcard
/// encoding does not fit there (none of the protocol's messages, by the size proof above)
/// is [`FrameError::BufferTooSmall`].
pub fn encode<'a, M: Serialize>(
    message: &M,
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], FrameError> {
    let mut body = [0u8; MAX_FRAME_LEN];
    let (postcard_room, _) = body.split_at_mut(MAX_FRAME_LEN - CRC_LEN);
    let len = postcard::to_slice(message, postcard_room)
        .map_err(|_| FrameError::BufferTooSmall)?
        .len();
    let (payload, rest) = body.split_at_mut(len);
    let crc = PARAMS_CRC.checksum(payload);
    let crc_bytes = rest
        .first_chunk_mut::<CRC_LEN>()
        .ok_or(FrameError::BufferTooSmall)?;
    *crc_bytes = crc.to_le_bytes();
    let body = body
        .get(..len + CRC_LEN)
        .ok_or(FrameError::BufferTooSmall)?;
    let n = cobs_encode(body, buf).ok_or(FrameError::BufferTooSmall)?;
    let (frame, _) = buf
        .split_at_mut_checked(n)
        .ok_or(FrameError::BufferTooSmall)?;
    Ok(frame)
}

/// Largest number of data bytes in one COBS block (code byte `0xFF`).
const COBS_MAX_RUN: usize = 254;

/// COBS-encodes `body` into `out`, terminator included, and returns the encoded length;
/// `None` if `out` is too small.
///
/// The body is cut at its zeros into runs; each run becomes blocks of at most 254 bytes,
/// each preceded by its code byte (length + 1), and a run that fills whole blocks is followed
/// by an empty block (code `0x01`), exactly as postcard's `Cobs` flavor (which the decoder
/// was written against) does. The zeros themselves are implied by the block boundaries.
fn cobs_encode(body: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut at = 0;
    let mut put = |block: &[u8]| -> Option<()> {
        let end = at + 1 + block.len();
        let (code, data) = out.get_mut(at..end)?.split_first_mut()?;
        *code = block.len() as u8 + 1;
        data.copy_from_slice(block);
        at = end;
        Some(())
    };
    for run in body.split(|&b| b == 0) {
        let blocks = run.chunks_exact(COBS_MAX_RUN);
        let last = blocks.remainder();
        for block in blocks {
            put(block)?;
        }
        put(last)?;
    }
    *out.get_mut(at)? = 0;
    Some(at + 1)
}

/// Counts of what a [`FrameDecoder`] has seen, for link-health metrics. Each count wraps
/// around after `u32::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DecoderStats {
    /// Frames decoded into a message.
    pub frames: u32,
    /// Frames whose CRC did not match.
    pub crc_errors: u32,
    /// Runs of bytes longer than the buffer before a terminator.
    pub overflows: u32,
    /// Frames whose CRC matched but whose bytes are no known message (see
    /// [`FrameError::Undecodable`]): the peer speaks another protocol.
    pub undecodable: u32,
    /// Frames whose COBS encoding was broken (see [`FrameError::Cobs`]): corruption, like a
    /// CRC error, caught one step earlier.
    pub cobs_errors: u32,
}

impl DecoderStats {
    /// Every rejected frame or run of bytes: CRC errors, overflows, undecodable frames and
    /// COBS errors.
    pub fn errors(&self) -> u32 {
        self.crc_errors
            .saturating_add(self.overflows)
            .saturating_add(self.undecodable)
            .saturating_add(self.cobs_errors)
    }
}

/// Streaming decoder of capacity `N` bytes (a whole encoded frame must fit; use
/// [`MAX_FRAME_LEN`]). Takes bytes in any chunking.
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Set after an overflow: drop bytes until the next terminator.
    discarding: bool,
    stats: DecoderStats,
    /// The version announced by the last intact but undecodable `Hello` (see
    /// [`FrameDecoder::foreign_hello_version`]).
    foreign_hello: Option<u16>,
}

/// A frame [`FrameDecoder::next_frame`] found complete in the decoder's buffer, not yet
/// decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedFrame {
    /// Its COBS-encoded bytes, terminator excluded (at least 1).
    len: usize,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: [0; N],
            len: 0,
            discarding: false,
            stats: DecoderStats {
                frames: 0,
                crc_errors: 0,
                overflows: 0,
                undecodable: 0,
                cobs_errors: 0,
            },
            foreign_hello: None,
        }
    }

    /// The protocol version a peer announced in the last intact frame this build could not
    /// decode, when that frame was a `Hello`: in every protocol version a `Hello` is tag 0
    /// with the version as its first field, so a peer speaking another version still tells
    /// which (its other fields may not parse here). `None` if no such frame came.
    pub fn foreign_hello_version(&self) -> Option<u16> {
        self.foreign_hello
    }

    /// What the decoder has seen so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Forgets a partly received frame (e.g. after the link was reopened).
    pub fn reset(&mut self) {
        self.len = 0;
        self.discarding = false;
    }

    /// Consumes bytes from the front of `input` until one frame ends, and returns what it
    /// held; `None` once `input` is used up with no frame ended (the partial frame is kept
    /// for the next call).
    ///
    /// Empty frames (a lone `0x00`, as sent to flush a line) are skipped silently. The same
    /// as [`FrameDecoder::next_frame`] followed by [`FrameDecoder::decode_frame`].
    pub fn decode_next<M: DeserializeOwned>(
        &mut self,
        input: &mut &[u8],
    ) -> Option<Result<M, FrameError>> {
        Some(
            self.next_frame(input)?
                .and_then(|frame| self.decode_frame(frame)),
        )
    }

    /// Consumes bytes from the front of `input` until one frame ends and returns a token for
    /// it (the frame stays in the decoder's buffer for [`FrameDecoder::decode_frame`]), or
    /// the overflow that dropped it; `None` once `input` is used up with no frame ended.
    /// Empty frames are skipped silently.
    ///
    /// The two steps are apart so that a caller with little stack can give the decoded
    /// message one place of its own (see [`FrameDecoder::decode_frame`]).
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<Result<EndedFrame, FrameError>> {
        while let Some((&byte, rest)) = input.split_first() {
            *input = rest;
            if byte != 0 {
                if self.discarding {
                    continue;
                }
                if let Some(slot) = self.buf.get_mut(self.len) {
                    *slot = byte;
                    self.len += 1;
                    continue;
                }
                self.discarding = true;
                self.len = 0;
                self.stats.overflows = self.stats.overflows.wrapping_add(1);
                return Some(Err(FrameError::Overflow));
            }
            // A terminator.
            let len = core::mem::take(&mut self.len);
            if core::mem::take(&mut self.discarding) || len == 0 {
                continue;
            }
            return Some(Ok(EndedFrame { len }));
        }
        None
    }

    /// Decodes the frame `next_frame` just ended: COBS, then postcard's CRC-32 flavor,
    /// nothing after the CRC. Call it before feeding the decoder more bytes (a token of an
    /// older frame decodes whatever the buffer holds now, which fails its CRC).
    ///
    /// Not inlined: postcard's visitors move a large message (a policy chunk is about 1 KB)
    /// through several temporaries on its way out, and in a frame of their own those are
    /// gone before the caller handles the message (a firmware's receive loop would
    /// otherwise carry them under every handler it calls).
    #[inline(never)]
    pub fn decode_frame<M: DeserializeOwned>(
        &mut self,
        frame: EndedFrame,
    ) -> Result<M, FrameError> {
        let len = frame.len.min(N);
        let decoded = match cobs::decode_in_place(&mut self.buf[..len]) {
            Ok(n) => n,
            Err(_) => {
                self.stats.cobs_errors = self.stats.cobs_errors.wrapping_add(1);
                return Err(FrameError::Cobs);
            }
        };
        let body = &self.buf[..decoded];
        // Happy path: postcard's CRC-32 flavor parses the message, then checks the CRC over
        // exactly the bytes it consumed; the body must end right after the CRC.
        let flavor = CrcModifier::new(Slice::new(body), PARAMS_CRC.digest());
        let mut deserializer = postcard::Deserializer::from_flavor(flavor);
        let parsed = M::deserialize(&mut deserializer);
        if let (Ok(message), Ok([])) = (parsed, deserializer.finalize()) {
            self.stats.frames = self.stats.frames.wrapping_add(1);
            return Ok(message);
        }
        // Anything else is rejected. The flavor checks the CRC only after a successful parse,
        // and at the position where the parse stopped, so tell a corrupted frame from a
        // foreign one (unknown tag, extra fields, out-of-range value) by the CRC over the
        // whole body: a frame whose last four bytes are the CRC of the rest arrived intact.
        if crc_matches(body) {
            self.stats.undecodable = self.stats.undecodable.wrapping_add(1);
            if let Some(version) = hello_version(body) {
                self.foreign_hello = Some(version);
            }
            Err(FrameError::Undecodable)
        } else {
            self.stats.crc_errors = self.stats.crc_errors.wrapping_add(1);
            Err(FrameError::BadCrc)
        }
    }
}

/// The protocol version at the start of a `Hello` body: tag 0, then the version as a
/// postcard `u16` varint; `None` for any other message.
fn hello_version(body: &[u8]) -> Option<u16> {
    match body.split_first() {
        Some((0, rest)) => postcard::take_from_bytes::<u16>(rest).ok().map(|(v, _)| v),
        _ => None,
    }
}

/// Whether the last four bytes of `body` are the little-endian CRC-32 of the rest.
/// `false` when `body` is shorter than the CRC.
pub fn crc_matches(body: &[u8]) -> bool {
    let Some(split) = body.len().checked_sub(CRC_LEN) else {
        return false;
    };
    let (payload, crc) = body.split_at(split);
    PARAMS_CRC.checksum(payload).to_le_bytes() == crc
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::message::{DeviceMessage, DeviceState, Heartbeat, HostMessage};

    fn heartbeat() -> DeviceMessage {
        DeviceMessage::Heartbeat(Heartbeat {
            uptime_us: 123_456,
            state: DeviceState::Running,
            last_host_sequence: 7,
        })
    }

    #[test]
    fn round_trip_in_one_chunk_and_byte_by_byte() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = encode(&heartbeat(), &mut buf).unwrap();
        assert_eq!(frame.last(), Some(&0));
        assert_eq!(frame.iter().filter(|&&b| b == 0).count(), 1);

        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let mut input: &[u8] = frame;
        assert_eq!(
            decoder.decode_next::<DeviceMessage>(&mut input),
            Some(Ok(heartbeat()))
        );
        assert!(input.is_empty());

        for (i, byte) in frame.iter().enumerate() {
            let mut one: &[u8] = core::slice::from_ref(byte);
            let got = decoder.decode_next::<DeviceMessage>(&mut one);
            if i + 1 == frame.len() {
                assert_eq!(got, Some(Ok(heartbeat())));
            } else {
                assert_eq!(got, None);
            }
        }
        assert_eq!(decoder.stats().frames, 2);
    }

    #[test]
    fn corrupted_frame_is_rejected_and_next_one_decoded() {
        let mut buf = [0u8; 64];
        let len = encode(&heartbeat(), &mut buf).unwrap().len();
        let mut stream = [0u8; 128];
        stream[..len].copy_from_slice(&buf[..len]);
        stream[len..2 * len].copy_from_slice(&buf[..len]);
        stream[3] ^= 0x10;
        let mut decoder = FrameDecoder::<64>::new();
        let mut input: &[u8] = &stream[..2 * len];
        assert!(matches!(
            decoder.decode_next::<DeviceMessage>(&mut input),
            Some(Err(_))
        ));
        assert_eq!(
            decoder.decode_next::<DeviceMessage>(&mut input),
            Some(Ok(heartbeat()))
        );
    }

    #[test]
    fn overflow_drops_until_next_terminator() {
        let mut decoder = FrameDecoder::<8>::new();
        let long = [0x11u8; 20];
        let mut input: &[u8] = &long;
        assert_eq!(
            decoder.decode_next::<HostMessage>(&mut input),
            Some(Err(FrameError::Overflow))
        );
        assert_eq!(decoder.decode_next::<HostMessage>(&mut input), None);
        let mut buf = [0u8; 8];
        let frame = encode(&HostMessage::Stop, &mut buf).unwrap();
        let mut stream = [0u8; 9];
        stream[1..1 + frame.len()].copy_from_slice(frame);
        let mut input: &[u8] = &stream[..1 + frame.len()];
        assert_eq!(
            decoder.decode_next::<HostMessage>(&mut input),
            Some(Ok(HostMessage::Stop))
        );
        assert_eq!(decoder.stats().overflows, 1);
    }

    #[test]
    fn frames_decode_in_two_steps_and_a_stale_token_is_an_error() {
        let mut buf = [0u8; 64];
        let frame = encode(&heartbeat(), &mut buf).unwrap();
        let mut decoder = FrameDecoder::<64>::new();
        let mut input: &[u8] = frame;
        let ended = decoder.next_frame(&mut input).unwrap().unwrap();
        assert!(input.is_empty());
        assert_eq!(decoder.next_frame(&mut input), None);
        assert_eq!(
            decoder.decode_frame::<DeviceMessage>(ended),
            Ok(heartbeat())
        );
        // Decoding the same token again reads a buffer already COBS-decoded in place: an
        // error, never a panic or a second message.
        assert!(decoder.decode_frame::<DeviceMessage>(ended).is_err());
        assert_eq!(decoder.stats().frames, 1);
    }

    /// The encoding as postcard's flavors do it (CRC inside COBS), which [`encode`] must
    /// reproduce byte for byte.
    fn encode_with_postcard_flavors<M: Serialize>(message: &M, buf: &mut [u8]) -> Option<usize> {
        use postcard::ser_flavors::{Cobs, Slice, crc::CrcModifier};
        let cobs = Cobs::try_new(Slice::new(buf)).ok()?;
        let flavor = CrcModifier::new(cobs, PARAMS_CRC.digest());
        postcard::serialize_with_flavor(message, flavor)
            .ok()
            .map(|f| f.len())
    }

    /// postcard's `Cobs` flavor over raw bytes, terminator included.
    fn postcard_cobs(bytes: &[u8], buf: &mut [u8]) -> usize {
        use postcard::ser_flavors::{Cobs, Flavor, Slice};
        let mut cobs = Cobs::try_new(Slice::new(buf)).unwrap();
        cobs.try_extend(bytes).unwrap();
        cobs.finalize().unwrap().len()
    }

    #[test]
    fn cobs_blocks_match_postcard_at_the_254_byte_boundaries() {
        let mut expected = [0u8; 1200];
        let mut got = [0u8; 1200];
        for len in [0, 1, 253, 254, 255, 507, 508, 509, 1000] {
            for zero_at in [None, Some(0), Some(253), Some(254), Some(len / 2)] {
                let mut body = std::vec![0x5au8; len];
                if let Some(z) = zero_at.filter(|&z| z < len) {
                    body[z] = 0;
                }
                let n = postcard_cobs(&body, &mut expected);
                assert_eq!(cobs_encode(&body, &mut got), Some(n), "len {len}");
                assert_eq!(got[..n], expected[..n], "len {len}, zero at {zero_at:?}");
                assert_eq!(cobs_encode(&body, &mut got[..n - 1]), None);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn cobs_matches_postcard_on_random_bytes(
            body in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0u8), 1u8..=255, 1u8..=255],
                0..700,
            ),
        ) {
            let mut expected = [0u8; 1024];
            let mut got = [0u8; 1024];
            let n = postcard_cobs(&body, &mut expected);
            proptest::prop_assert_eq!(cobs_encode(&body, &mut got), Some(n));
            proptest::prop_assert_eq!(&got[..n], &expected[..n]);
        }

        #[test]
        fn frames_match_postcard_flavors_byte_for_byte(
            values in proptest::collection::vec(proptest::num::f32::ANY, 0..240),
            episode in 0u32..100_000,
        ) {
            let batch = DeviceMessage::Transitions(crate::message::TransitionBatch {
                episode,
                first_step: episode / 3,
                policy_version: 7,
                values: heapless::Vec::from_slice(&values).unwrap(),
            });
            let mut expected = [0u8; MAX_FRAME_LEN];
            let mut got = [0u8; MAX_FRAME_LEN];
            let n = encode_with_postcard_flavors(&batch, &mut expected).unwrap();
            let frame = encode(&batch, &mut got).unwrap();
            proptest::prop_assert_eq!(&frame[..], &expected[..n]);
        }
    }

    #[test]
    fn small_output_buffer_is_an_error() {
        let mut buf = [0u8; 4];
        assert_eq!(
            encode(&heartbeat(), &mut buf).err(),
            Some(FrameError::BufferTooSmall)
        );
    }
}
