//! Wire benchmarks: encode and decode throughput of a full transition batch, and the wire
//! cost per transition against the raw payload (4 bytes per f32 field).
//!
//! Run: `cargo bench -p tether-shared --bench wire -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_shared::DeviceMessage;
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{TRANSITION_BATCH_VALUES, TransitionBatch};

/// A plant's transition record: observation values and action values (plus reward and
/// log-probability, always one each).
struct Plant {
    name: &'static str,
    obs: usize,
    action: usize,
}

const PLANTS: [Plant; 2] = [
    Plant {
        name: "pendulum (3 obs, 1 action)",
        obs: 3,
        action: 1,
    },
    Plant {
        name: "6-obs plant (6 obs, 1 action)",
        obs: 6,
        action: 1,
    },
];

impl Plant {
    /// f32 values per transition record.
    fn width(&self) -> usize {
        self.obs + self.action + 2
    }

    /// Records in a full batch.
    fn records(&self) -> usize {
        TRANSITION_BATCH_VALUES / self.width()
    }

    /// A full batch with realistic ids and values (no special zero patterns).
    fn full_batch(&self) -> DeviceMessage {
        let n = self.records() * self.width();
        let mut state = 0x2545_F491u32;
        let values = (0..n)
            .map(|_| {
                // xorshift32, mapped to [-4, 4): observations, actions, rewards, log-probs.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 8.0 - 4.0
            })
            .collect();
        DeviceMessage::Transitions(TransitionBatch {
            episode: 1_234,
            first_step: 160,
            policy_version: 57,
            values,
        })
    }
}

fn encode_len(m: &DeviceMessage) -> usize {
    let mut buf = [0u8; MAX_FRAME_LEN];
    frame::encode(m, &mut buf).map(|f| f.len()).unwrap_or(0)
}

fn report_overhead() {
    eprintln!("wire bytes per transition, full batch (raw payload = 4 bytes per f32 field):");
    for plant in &PLANTS {
        let wire = encode_len(&plant.full_batch()) as f64;
        let per = wire / plant.records() as f64;
        let raw = 4.0 * plant.width() as f64;
        eprintln!(
            "  {:<30} {} records x {} f32: frame {wire} B, {per:.2} B/transition vs {raw} B raw = {:.4}x",
            plant.name,
            plant.records(),
            plant.width(),
            per / raw
        );
    }
}

fn wire(c: &mut Criterion) {
    report_overhead();
    for plant in &PLANTS {
        let message = plant.full_batch();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = frame::encode(&message, &mut buf)
            .expect("a full batch fits one frame")
            .to_vec();

        let mut group = c.benchmark_group(plant.name);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function("encode", |b| {
            let mut out = [0u8; MAX_FRAME_LEN];
            b.iter(|| {
                let f = frame::encode(black_box(&message), &mut out).map(|f| f.len());
                black_box(f)
            })
        });
        group.bench_function("decode", |b| {
            let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
            b.iter(|| {
                let mut input: &[u8] = black_box(&frame);
                black_box(decoder.decode_next::<DeviceMessage>(&mut input))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, wire);
criterion_main!(benches);
