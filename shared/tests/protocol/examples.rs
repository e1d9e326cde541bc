//! The worked examples of `docs/PROTOCOL.md`, generated and pinned here so the document
//! cannot drift from the code. A failure here means the wire format changed: bump
//! `PROTOCOL_VERSION` and update the document.

use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN, PARAMS_CRC};
use tether_shared::message::TransitionBatch;
use tether_shared::{DeviceMessage, HostMessage};

use crate::strategies::{decode_pieces, frame_of};

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints postcard bytes, CRC and frame, and returns the frame.
fn show<M: serde::Serialize>(name: &str, m: &M) -> Vec<u8> {
    let payload = postcard::to_slice(m, &mut [0u8; MAX_FRAME_LEN])
        .unwrap()
        .to_vec();
    let crc = PARAMS_CRC.checksum(&payload);
    let frame = frame_of(m);
    println!(
        "{name}\n  postcard: {}\n  crc32:    {crc:08X} (LE: {})\n  frame:    {}",
        hex(&payload),
        hex(&crc.to_le_bytes()),
        hex(&frame)
    );
    frame
}

#[test]
fn host_heartbeat_example() {
    let m = HostMessage::Heartbeat { sequence: 300 };
    let frame = show("HostMessage::Heartbeat { sequence: 300 }", &m);
    assert_eq!(hex(&frame), "08 06 AC 02 69 37 70 17 00");
    let mut d = FrameDecoder::<MAX_FRAME_LEN>::new();
    assert_eq!(
        decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut d, &[&frame]),
        [Ok(m)]
    );
}

#[test]
fn pendulum_transition_example() {
    // One pendulum record: obs (cos θ, sin θ, θ̇) = (1, 0, -0.5), action 0.25 N·m,
    // reward -1.5, log-probability -0.91893853.
    let m = DeviceMessage::Transitions(TransitionBatch {
        episode: 1,
        first_step: 0,
        policy_version: 2,
        values: heapless::Vec::from_slice(&[1.0, 0.0, -0.5, 0.25, -1.5, -0.918_938_5]).unwrap(),
    });
    let frame = show("DeviceMessage::Transitions (one pendulum record)", &m);
    assert_eq!(
        hex(&frame),
        "03 03 01 03 02 06 01 03 80 3F 01 01 01 01 01 01 02 BF 01 03 80 3E 01 0B C0 BF 8E 3F 6B BF \
         A2 7C 20 F2 00"
    );
    let mut d = FrameDecoder::<MAX_FRAME_LEN>::new();
    assert_eq!(
        decode_pieces::<DeviceMessage, MAX_FRAME_LEN>(&mut d, &[&frame]),
        [Ok(m)]
    );
}
