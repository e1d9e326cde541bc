//! Flip every bit of a representative frame of each large message, one at a time, and feed
//! the damaged frame followed by two good frames.
//!
//! What a flip can do: inside the body it damages the content (caught by COBS or the CRC) or
//! turns a byte into `0x00`, splitting the frame in two damaged fragments; in the terminator
//! it turns `0x00` into a data byte, merging the damaged frame with the good frame after it.
//! So the requirement checked here: the decoder never yields a message other than the good
//! one, yields every good frame that does not share a terminator with the damaged one (both
//! of them, or only the second when the terminator was hit), and counts the damage.

use serde::{Serialize, de::DeserializeOwned};
use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{
    DeviceInfo, DeviceState, EpisodeEnd, EpisodeEndReason, Heartbeat, LogLine, PolicyBegin,
    PolicyChunk, TransitionBatch,
};
use tether_shared::version::FirmwareVersion;
use tether_shared::{ActionSpace, DeviceMessage, HostMessage, PlantDescription, PolicySpec};

use crate::strategies::{decode_pieces, frame_of, same};

/// Deterministic, varied values (some with zero bytes, some without).
fn values<const N: usize>(count: usize, salt: f32) -> heapless::Vec<f32, N> {
    (0..count)
        .map(|i| match i % 4 {
            0 => 0.5,
            1 => (i as f32 * 0.37 + salt).sin(),
            2 => -(i as f32) * 1.25e-3,
            _ => 1.0e6 + i as f32,
        })
        .collect()
}

pub fn pendulum() -> PlantDescription {
    PlantDescription {
        name: heapless::String::try_from("pendulum").unwrap(),
        obs_dim: 3,
        action: ActionSpace::Continuous {
            low: heapless::Vec::from_slice(&[-2.0]).unwrap(),
            high: heapless::Vec::from_slice(&[2.0]).unwrap(),
        },
        control_rate_hz: 50.0,
        episode_steps: 200,
    }
}

fn host_frames() -> Vec<HostMessage> {
    vec![
        HostMessage::PolicyChunk(PolicyChunk {
            version: 3,
            offset: 480,
            values: values(240, 0.1),
        }),
        HostMessage::PolicyBegin(PolicyBegin {
            version: 3,
            spec: PolicySpec::for_plant(&pendulum(), &[64, 64], true),
            len: 4488,
            crc: 0xDEAD_BEEF,
        }),
    ]
}

fn device_frames() -> Vec<DeviceMessage> {
    vec![
        DeviceMessage::Transitions(TransitionBatch {
            episode: 17,
            first_step: 120,
            policy_version: 3,
            values: values(240, 0.7),
        }),
        DeviceMessage::Hello(DeviceInfo {
            protocol_version: tether_shared::PROTOCOL_VERSION,
            firmware_version: FirmwareVersion {
                major: 0,
                minor: 1,
                patch: 0,
            },
            plant: pendulum(),
            policy_capacity: 20_000,
            active_policy: Some(2),
            action_rate_limit: values(1, 0.5),
        }),
        DeviceMessage::EpisodeEnd(EpisodeEnd {
            episode: 17,
            policy_version: 3,
            length: 200,
            episode_return: -812.25,
            reason: EpisodeEndReason::Truncated,
            final_obs: values(3, 0.2),
            worst_step_us: 412,
            missed_deadlines: 0,
            rate_limited_steps: 3,
        }),
        DeviceMessage::Log(LogLine {
            text: heapless::String::try_from("policy v3 committed, runs from the next episode")
                .unwrap(),
        }),
    ]
}

fn flip_every_bit<M>(damaged: &M, good: &M)
where
    M: Serialize + DeserializeOwned + core::fmt::Debug,
{
    let original = frame_of(damaged);
    let good_frame = frame_of(good);
    assert!(!same(damaged, good));
    let terminator = original.len() - 1;
    for bit in 0..original.len() * 8 {
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        let mut flipped = original.clone();
        flipped[byte] ^= mask;
        let made_zero = flipped[byte] == 0;

        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let got =
            decode_pieces::<M, MAX_FRAME_LEN>(&mut decoder, &[&flipped, &good_frame, &good_frame]);
        let accepted: Vec<&M> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        let expected = if byte == terminator { 1 } else { 2 };
        assert_eq!(accepted.len(), expected, "bit {bit}: {got:?}");
        assert!(
            accepted.iter().all(|m| same(*m, good)),
            "bit {bit}: a wrong message was accepted: {accepted:?}"
        );
        assert!(
            got.last().is_some_and(|r| r.is_ok()),
            "bit {bit}: not resynchronised"
        );

        let stats = decoder.stats();
        assert_eq!(stats.frames as usize, expected, "bit {bit}");
        assert_eq!(
            stats.undecodable, 0,
            "bit {bit}: corruption counted as foreign"
        );
        let max_errors = if made_zero { 2 } else { 1 };
        assert!(
            (1..=max_errors).contains(&stats.errors()),
            "bit {bit}: {stats:?}"
        );
        assert_eq!(stats.errors() as usize, got.len() - expected, "bit {bit}");
    }
}

#[test]
fn every_single_bit_flip_of_host_frames_is_rejected() {
    let good = HostMessage::Heartbeat { sequence: 99 };
    for m in host_frames() {
        flip_every_bit(&m, &good);
    }
}

#[test]
fn every_single_bit_flip_of_device_frames_is_rejected() {
    let good = DeviceMessage::Heartbeat(Heartbeat {
        uptime_us: 5_000_000,
        state: DeviceState::Running,
        last_host_sequence: 99,
    });
    for m in device_frames() {
        flip_every_bit(&m, &good);
    }
}
