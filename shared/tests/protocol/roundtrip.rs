//! Every message kind survives `encode` → bytes in arbitrary pieces → `FrameDecoder`.

use proptest::prelude::*;
use tether_shared::HostMessage;
use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN};

use crate::strategies::*;

/// Splits `stream` at the given (unsorted, possibly repeated) points.
fn split<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&stream[start..p]); // empty pieces are allowed and must be harmless
        start = p;
    }
    pieces.push(&stream[start..]);
    pieces
}

fn check_round_trip<M>(messages: &[M], cuts: &[prop::sample::Index]) -> Result<(), TestCaseError>
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let stream: Vec<u8> = messages.iter().flat_map(frame_of).collect();
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<M, MAX_FRAME_LEN>(&mut decoder, &split(&stream, cuts));
    prop_assert_eq!(got.len(), messages.len());
    for (got, sent) in got.iter().zip(messages) {
        let got = got
            .as_ref()
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        // Bit-exact (NaN payloads included), and equal wherever equality is defined.
        prop_assert!(same(got, sent), "{got:?} != {sent:?}");
        #[allow(clippy::eq_op)]
        if sent == sent {
            prop_assert_eq!(got, sent);
        }
    }
    let stats = decoder.stats();
    prop_assert_eq!(stats.frames as usize, messages.len());
    prop_assert_eq!(stats.errors(), 0);
    Ok(())
}

proptest! {
    #[test]
    fn host_messages_round_trip_in_any_chunking(
        messages in prop::collection::vec(host_message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        check_round_trip(&messages, &cuts)?;
    }

    #[test]
    fn device_messages_round_trip_in_any_chunking(
        messages in prop::collection::vec(device_message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        check_round_trip(&messages, &cuts)?;
    }
}

/// The strategies reach every kind of both enums (so the properties above cover them all).
#[test]
fn strategies_cover_every_message_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut host, mut device) = ([false; HOST_KINDS], [false; DEVICE_KINDS]);
    let (hs, ds) = (host_message(), device_message());
    for _ in 0..500 {
        host[host_kind(&hs.new_tree(&mut runner).unwrap().current())] = true;
        device[device_kind(&ds.new_tree(&mut runner).unwrap().current())] = true;
    }
    assert!(host.iter().all(|&s| s), "host kinds seen: {host:?}");
    assert!(device.iter().all(|&s| s), "device kinds seen: {device:?}");
}

/// Byte by byte, and with empty frames (a lone `0x00` as line flush) between frames.
#[test]
fn byte_by_byte_with_flush_zeros() {
    let messages = [
        HostMessage::Stop,
        HostMessage::Heartbeat { sequence: u32::MAX },
        HostMessage::Hello {
            protocol_version: 1,
        },
    ];
    let mut stream = vec![0, 0];
    for m in &messages {
        stream.extend(frame_of(m));
        stream.push(0);
    }
    let pieces: Vec<&[u8]> = stream.chunks(1).collect();
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut decoder, &pieces);
    let got: Vec<HostMessage> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, messages);
    assert_eq!(decoder.stats().errors(), 0);
}
