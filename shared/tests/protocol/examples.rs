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
fn selective_acknowledgement_example() {
    let m = HostMessage::Received(tether_shared::message::StepRange {
        episode: 3,
        from_step: 40,
        to_step: 64,
    });
    let frame = show(
        "HostMessage::Received(StepRange { episode: 3, from_step: 40, to_step: 64 })",
        &m,
    );
    assert_eq!(hex(&frame), "09 0D 03 28 40 A2 56 E9 FA 00");
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

#[test]
fn plant_params_example() {
    // Every episode draws the arm's mass from 0.9-1.1 times 0.1 kg, a quarter of the draws
    // at an end of the range; one period of latency.
    let mut m = tether_shared::message::PlantParams {
        range_end_share: 0.25,
        ..Default::default()
    };
    for setting in [
        tether_shared::message::ParamSetting::new(
            "arm_mass",
            Some(0.1),
            Some(tether_shared::message::ParamRange {
                low: 0.9,
                high: 1.1,
            }),
        ),
        tether_shared::message::ParamSetting::new("latency_steps", Some(1.0), None),
    ] {
        m.settings.push(setting.unwrap()).unwrap();
    }
    let m = HostMessage::PlantParams(m);
    let frame = show(
        "HostMessage::PlantParams (arm_mass 0.1 × [0.9, 1.1], latency 1, end share 0.25)",
        &m,
    );
    assert_eq!(
        hex(&frame),
        "29 07 02 08 61 72 6D 5F 6D 61 73 73 01 CD CC CC 3D 01 66 66 66 3F CD CC 8C 3F 0D 6C 61 \
         74 65 6E 63 79 5F 73 74 65 70 73 01 01 03 80 3F 01 01 07 80 3E 6F 44 6B 3C 00"
    );
    let mut d = FrameDecoder::<MAX_FRAME_LEN>::new();
    assert_eq!(
        decode_pieces::<HostMessage, MAX_FRAME_LEN>(&mut d, &[&frame]),
        [Ok(m)]
    );
}
