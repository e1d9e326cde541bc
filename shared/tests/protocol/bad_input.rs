//! Garbage on the line, garbage between frames, truncated frames, frames over capacity and
//! foreign frames with a valid CRC: never a panic, never a wrong message, and the decoder
//! resynchronises on the next good frame.

use proptest::prelude::*;
use serde::Serialize;
use tether_shared::frame::{self, FrameDecoder, FrameError, MAX_FRAME_LEN, crc_matches};
use tether_shared::message::{PolicyChunk, TransitionBatch};
use tether_shared::{DeviceMessage, HostMessage};

use crate::strategies::*;

/// How many `0x00`-terminated segments of `bytes` a decoder of capacity `N` could possibly
/// accept: those that fit, COBS-decode, and carry a valid CRC. For random bytes this is 0
/// but for a 2^-32 chance per segment, so tests check against it instead of assuming it.
fn plausible_frames<const N: usize>(bytes: &[u8]) -> usize {
    let Some(last_zero) = bytes.iter().rposition(|&b| b == 0) else {
        return 0;
    };
    bytes[..last_zero]
        .split(|&b| b == 0)
        .filter(|seg| !seg.is_empty() && seg.len() <= N)
        .filter(|seg| {
            let mut copy = seg.to_vec();
            cobs::decode_in_place(&mut copy).is_ok_and(|n| crc_matches(&copy[..n]))
        })
        .count()
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Uniform bytes: zeros are rare.
        prop::collection::vec(any::<u8>(), 0..2500),
        // Many zeros and small codes: lots of short, COBS-plausible segments.
        prop::collection::vec(prop_oneof![Just(0u8), 1u8..8, any::<u8>()], 0..600),
    ]
}

/// Indices of messages in `sent` that garbage just before them may have merged with: the
/// garbage is non-empty and does not end with a terminator.
fn at_risk(garbage: &[Vec<u8>]) -> Vec<bool> {
    garbage
        .iter()
        .map(|g| g.last().is_some_and(|&b| b != 0))
        .collect()
}

/// Whether `got` is `sent` with some of the at-risk messages removed (and nothing else
/// removed, reordered or changed).
fn matches_with_losses<M: Serialize>(sent: &[M], risk: &[bool], got: &[M]) -> bool {
    match (sent.split_first(), got.split_first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some((s, sent_rest)), _) => {
            let keep = got.split_first().is_some_and(|(g, got_rest)| {
                same(s, g) && matches_with_losses(sent_rest, &risk[1..], got_rest)
            });
            keep || (risk[0] && matches_with_losses(sent_rest, &risk[1..], got))
        }
    }
}

fn check_splices<M>(messages: &[M], garbage: &[Vec<u8>]) -> Result<(), TestCaseError>
where
    M: Serialize + serde::de::DeserializeOwned + core::fmt::Debug,
{
    let mut stream = Vec::new();
    for (m, g) in messages.iter().zip(garbage) {
        stream.extend_from_slice(g);
        stream.extend(frame_of(m));
    }
    // The garbage itself must not hold a frame that could pass (astronomically unlikely).
    for g in garbage {
        let mut terminated = g.clone();
        terminated.push(0);
        prop_assume!(plausible_frames::<MAX_FRAME_LEN>(&terminated) == 0);
    }
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<M, MAX_FRAME_LEN>(&mut decoder, &[&stream]);
    let accepted: Vec<M> = got.into_iter().filter_map(Result::ok).collect();
    let risk = at_risk(garbage);
    prop_assert!(
        matches_with_losses(messages, &risk, &accepted),
        "sent {messages:?}\ngot {accepted:?}"
    );
    // Every message not preceded by unterminated garbage arrives.
    let safe = risk.iter().filter(|&&r| !r).count();
    prop_assert!(accepted.len() >= safe);
    prop_assert_eq!(decoder.stats().frames as usize, accepted.len());
    Ok(())
}

proptest! {
    #[test]
    fn random_bytes_never_panic_nor_yield_a_message(bytes in garbage()) {
        let mut host = FrameDecoder::<MAX_FRAME_LEN>::new();
        let mut device = FrameDecoder::<MAX_FRAME_LEN>::new();
        let h = decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut host, &[&bytes]);
        let d = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut device, &[&bytes]);
        let plausible = plausible_frames::<MAX_FRAME_LEN>(&bytes);
        prop_assert!(h.iter().filter(|r| r.is_ok()).count() <= plausible);
        prop_assert!(d.iter().filter(|r| r.is_ok()).count() <= plausible);
        // Every item yielded is counted.
        prop_assert_eq!(host.stats().errors() + host.stats().frames, h.len() as u32);
        prop_assert_eq!(device.stats().errors() + device.stats().frames, d.len() as u32);
    }

    #[test]
    fn host_frames_survive_garbage_prefixes_and_splices(
        (messages, garbage) in (1usize..6).prop_flat_map(|n| (
            prop::collection::vec(host_message(), n),
            prop::collection::vec(garbage(), n),
        ))
    ) {
        check_splices(&messages, &garbage)?;
    }

    #[test]
    fn device_frames_survive_garbage_prefixes_and_splices(
        (messages, garbage) in (1usize..6).prop_flat_map(|n| (
            prop::collection::vec(device_message(), n),
            prop::collection::vec(garbage(), n),
        ))
    ) {
        check_splices(&messages, &garbage)?;
    }

    /// With a terminator after the garbage (what a sender does after a reset), nothing is lost.
    #[test]
    fn terminated_garbage_loses_nothing(
        (messages, mut garbage) in (1usize..5).prop_flat_map(|n| (
            prop::collection::vec(device_message(), n),
            prop::collection::vec(garbage(), n),
        ))
    ) {
        for g in &mut garbage {
            g.push(0);
        }
        let mut stream = Vec::new();
        for (m, g) in messages.iter().zip(&garbage) {
            prop_assume!(plausible_frames::<MAX_FRAME_LEN>(g) == 0);
            stream.extend_from_slice(g);
            stream.extend(frame_of(m));
        }
        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let got = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut decoder, &[&stream]);
        let accepted: Vec<DeviceMessage> = got.into_iter().filter_map(Result::ok).collect();
        prop_assert_eq!(accepted.len(), messages.len());
        for (a, m) in accepted.iter().zip(&messages) {
            prop_assert!(same(a, m));
        }
    }
}

fn full_batch() -> DeviceMessage {
    DeviceMessage::Transitions(TransitionBatch {
        episode: 1,
        first_step: 0,
        policy_version: 1,
        values: (0..240).map(|i| i as f32 * 0.25).collect(),
    })
}

#[test]
fn every_truncation_is_rejected_and_the_next_frame_decoded() {
    let chunk = HostMessage::PolicyChunk(PolicyChunk {
        version: 2,
        offset: 240,
        values: (0..240).map(|i| -(i as f32) / 7.0).collect(),
    });
    let good = HostMessage::Stop;
    let frame = frame_of(&chunk);
    let good_frame = frame_of(&good);
    let body = &frame[..frame.len() - 1];
    for cut in 1..body.len() {
        let mut truncated = body[..cut].to_vec();
        truncated.push(0);
        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let got =
            decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut decoder, &[&truncated, &good_frame]);
        assert_eq!(got.len(), 2, "cut {cut}");
        assert!(
            matches!(got[0], Err(FrameError::Cobs | FrameError::BadCrc)),
            "cut {cut}: {got:?}"
        );
        assert_eq!(got[1], Ok(HostMessage::Stop));
    }
    // Also for a device frame, dropping one byte anywhere (a lost byte on the line).
    let frame = frame_of(&full_batch());
    let body = &frame[..frame.len() - 1];
    for lost in 0..body.len() {
        let mut damaged: Vec<u8> = body[..lost]
            .iter()
            .chain(&body[lost + 1..])
            .copied()
            .collect();
        damaged.push(0);
        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let got = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut decoder, &[&damaged, &frame]);
        assert_eq!(got.len(), 2, "lost byte {lost}");
        assert!(got[0].is_err(), "lost byte {lost}");
        assert!(got[1].as_ref().is_ok_and(|m| same(m, &full_batch())));
    }
}

#[test]
fn frames_over_capacity_overflow_then_resynchronise() {
    // A full batch into a decoder too small for it.
    let big = frame_of(&full_batch());
    let small = frame_of(&HostMessage::Heartbeat { sequence: 1 });
    let mut decoder = FrameDecoder::<64>::new();
    let got = decode_pieces::<HostMessage, 64>(&mut decoder, &[&big, &small]);
    assert_eq!(
        got,
        [
            Err(FrameError::Overflow),
            Ok(HostMessage::Heartbeat { sequence: 1 })
        ]
    );
    assert_eq!(decoder.stats().overflows, 1);

    // A run of non-zero bytes far longer than MAX_FRAME_LEN, fed in pieces. It has no
    // terminator of its own, so it swallows the frame right after it (whose terminator ends
    // the run); the next frame is decoded.
    let noise = vec![0x5Au8; 5 * MAX_FRAME_LEN];
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let pieces: Vec<&[u8]> = noise.chunks(100).chain([&small[..], &small[..]]).collect();
    let got = decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut decoder, &pieces);
    assert_eq!(
        got,
        [
            Err(FrameError::Overflow),
            Ok(HostMessage::Heartbeat { sequence: 1 })
        ]
    );
    let stats = decoder.stats();
    assert_eq!((stats.overflows, stats.frames, stats.errors()), (1, 1, 1));
    // Followed by a terminator (as a sender that restarts emits), nothing is lost.
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let pieces: Vec<&[u8]> = noise.chunks(100).chain([&[0][..], &small[..]]).collect();
    let got = decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut decoder, &pieces);
    assert_eq!(
        got,
        [
            Err(FrameError::Overflow),
            Ok(HostMessage::Heartbeat { sequence: 1 })
        ]
    );

    // The largest frames fit a decoder of exactly MAX_FRAME_LEN.
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut decoder, &[&big]);
    assert!(got[0].is_ok());
}

/// A message of a newer protocol: one more variant, and an extra field.
#[derive(Serialize)]
#[allow(dead_code)]
enum Future {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    New(u32),
}

#[test]
fn unknown_tags_with_valid_crc_are_undecodable() {
    let mut buf = [0u8; 64];
    let unknown = frame::encode(&Future::New(7), &mut buf).unwrap().to_vec();
    // A known message with a trailing field it does not have.
    let extended = frame::encode(&(HostMessage::Heartbeat { sequence: 1 }, 5u8), &mut buf)
        .unwrap()
        .to_vec();
    let good = frame_of(&HostMessage::Stop);

    let mut host = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut host, &[&unknown, &extended, &good]);
    assert_eq!(
        got,
        [
            Err(FrameError::Undecodable),
            Err(FrameError::Undecodable),
            Ok(HostMessage::Stop)
        ]
    );
    let s = host.stats();
    assert_eq!(
        (s.undecodable, s.crc_errors, s.cobs_errors, s.frames),
        (2, 0, 0, 1)
    );

    let mut device = FrameDecoder::<MAX_FRAME_LEN>::new();
    let got = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut device, &[&unknown]);
    assert_eq!(got, [Err(FrameError::Undecodable)]);
    assert_eq!(device.stats().undecodable, 1);
}

#[test]
fn short_and_empty_frames() {
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    // Lone terminators are skipped; 1..4-byte bodies cannot hold a CRC.
    let got = decode_pieces::<HostMessage, MAX_FRAME_LEN>(
        &mut decoder,
        &[
            &[0, 0, 0],
            &[1, 0],
            &[2, 7, 0],
            &[0xFF, 0],
            &[5, 1, 2, 3, 4, 0],
        ],
    );
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(Result::is_err));
    assert_eq!(decoder.stats().errors(), 4);
    assert_eq!(decoder.stats().undecodable, 0);
}

/// A device on protocol version 1 (before the gSDE head and the rate limit) answers `Hello`
/// with the version-1 `DeviceInfo`, which lacks the rate-limit field: this build cannot
/// decode it, but reads the version the device announced, so the host can say which
/// firmware to flash instead of calling the device garbage.
#[test]
fn an_older_devices_hello_is_undecodable_but_names_its_version() {
    use tether_shared::message::DeviceInfo;
    use tether_shared::plant::PlantDescription;
    use tether_shared::version::FirmwareVersion;

    #[derive(serde::Serialize)]
    enum DeviceMessageV1 {
        Hello(DeviceInfoV1),
    }
    #[derive(serde::Serialize)]
    struct DeviceInfoV1 {
        protocol_version: u16,
        firmware_version: FirmwareVersion,
        plant: PlantDescription,
        policy_capacity: u32,
        active_policy: Option<u32>,
    }
    let plant = PlantDescription {
        name: heapless::String::try_from("pendulum").unwrap(),
        obs_dim: 3,
        action: tether_shared::ActionSpace::Continuous {
            low: heapless::Vec::from_slice(&[-2.0]).unwrap(),
            high: heapless::Vec::from_slice(&[2.0]).unwrap(),
        },
        control_rate_hz: 20.0,
        episode_steps: 200,
    };
    let v1 = DeviceMessageV1::Hello(DeviceInfoV1 {
        protocol_version: 1,
        firmware_version: FirmwareVersion {
            major: 0,
            minor: 1,
            patch: 0,
        },
        plant: plant.clone(),
        policy_capacity: 4700,
        active_policy: Some(300),
    });
    let mut buf = [0u8; 256];
    let frame = frame::encode(&v1, &mut buf).unwrap().to_vec();
    let mut host = FrameDecoder::<MAX_FRAME_LEN>::new();
    assert_eq!(host.foreign_hello_version(), None);
    let got = decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut host, &[&frame]);
    assert_eq!(got, [Err(FrameError::Undecodable)]);
    assert_eq!(host.foreign_hello_version(), Some(1));
    // A current Hello decodes; another undecodable message names no version.
    let current = DeviceMessage::Hello(DeviceInfo {
        protocol_version: tether_shared::PROTOCOL_VERSION,
        firmware_version: FirmwareVersion {
            major: 0,
            minor: 2,
            patch: 0,
        },
        plant,
        policy_capacity: 4700,
        active_policy: None,
        action_rate_limit: heapless::Vec::new(),
    });
    let mut fresh = FrameDecoder::<MAX_FRAME_LEN>::new();
    let other = frame::encode(&Future::New(7), &mut buf).unwrap().to_vec();
    let got =
        decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut fresh, &[&other, &frame_of(&current)]);
    assert_eq!(got, [Err(FrameError::Undecodable), Ok(current)]);
    assert_eq!(fresh.foreign_hello_version(), None);
}
