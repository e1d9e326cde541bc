extern crate std;

use std::vec::Vec;

use proptest::prelude::*;
use tether_shared::DeviceMessage;
use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{AckTopic, TransitionBatch};

use super::*;

const N: usize = 1200;
type Queue = RetransmitQueue<N, 8>;

fn batch(episode: u32, first_step: u32, steps: u16) -> (DeviceMessage, DataKey) {
    let values = (0..steps as usize * 4)
        .map(|i| (first_step as usize * 4 + i) as f32 * 0.5 + 1.0)
        .collect();
    let message = DeviceMessage::Transitions(TransitionBatch {
        episode,
        first_step,
        policy_version: 3,
        values,
    });
    (message, DataKey::batch(episode, first_step, steps))
}

/// A bound for a batch of `steps` 4-value records.
fn bound(steps: u16) -> usize {
    frame::max_frame_len(1 + 3 * 5 + 3 + 16 * steps as usize)
}

fn push_batch(
    q: &mut Queue,
    episode: u32,
    first_step: u32,
    steps: u16,
) -> Result<usize, QueueError> {
    let (m, key) = batch(episode, first_step, steps);
    q.push_frame(&m, 0, Some((key, bound(steps))))
}

/// Writes everything pending and decodes it.
fn drain(q: &mut Queue) -> Vec<DeviceMessage> {
    let bytes = q.pending().to_vec();
    q.consume(bytes.len());
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let mut input = bytes.as_slice();
    let mut out = Vec::new();
    while let Some(m) = decoder.decode_next::<DeviceMessage>(&mut input) {
        out.push(m.expect("only whole, valid frames are written"));
    }
    out
}

fn first_steps(messages: &[DeviceMessage]) -> Vec<u32> {
    messages
        .iter()
        .filter_map(|m| match m {
            DeviceMessage::Transitions(b) => Some(b.first_step),
            _ => None,
        })
        .collect()
}

#[test]
fn sent_frames_are_kept_until_released() {
    let mut q = Queue::new();
    push_batch(&mut q, 1, 0, 10).unwrap();
    push_batch(&mut q, 1, 10, 10).unwrap();
    q.push_frame(&DeviceMessage::Ack(AckTopic::Run), 0, None)
        .unwrap();
    assert_eq!(first_steps(&drain(&mut q)), [0, 10]);
    assert!(q.is_empty());
    assert_eq!(q.kept().len(), 2, "both batches kept, the ack not");
    q.release(&ReleaseMark {
        episode: 1,
        step: 10,
    });
    assert_eq!(q.kept().len(), 1);
    assert_eq!(q.kept()[0].key.first_step, 10);
    q.release(&ReleaseMark {
        episode: 2,
        step: 0,
    });
    assert!(q.kept().is_empty());
}

#[test]
fn a_selective_acknowledgement_releases_only_frames_wholly_inside_it() {
    let mut q = Queue::new();
    for step in [0, 10, 20, 30] {
        push_batch(&mut q, 2, step, 10).unwrap();
    }
    q.push_frame(
        &DeviceMessage::Ack(AckTopic::Run),
        0,
        Some((DataKey::end(2, 40), 64)),
    )
    .unwrap();
    drain(&mut q);
    // Steps 0..10 were lost: the host holds 10..25 and the end report.
    q.release_received(&StepRange {
        episode: 2,
        from_step: 10,
        to_step: 25,
    });
    q.release_received(&StepRange {
        episode: 2,
        from_step: 40,
        to_step: StepRange::TO_END,
    });
    q.release_received(&StepRange {
        episode: 3,
        from_step: 0,
        to_step: StepRange::TO_END,
    });
    let kept: Vec<u32> = q.kept().iter().map(|k| k.key.first_step).collect();
    assert_eq!(
        kept,
        [0, 20, 30],
        "10..20 and the end released; 20..30 only half held"
    );
}

#[test]
fn a_resend_sends_the_same_frame_again_and_keeps_it() {
    let mut q = Queue::new();
    for step in [0, 10, 20] {
        push_batch(&mut q, 4, step, 10).unwrap();
    }
    let first = drain(&mut q);
    let asked = StepRange {
        episode: 4,
        from_step: 10,
        to_step: 20,
    };
    assert_eq!(
        q.resend(&asked),
        ResendOutcome {
            served: 1,
            exhausted: 0
        }
    );
    let again = drain(&mut q);
    assert_eq!(again, [first[1].clone()], "the same message, bit for bit");
    assert_eq!(q.kept().len(), 3, "still kept after the resend");
    assert_eq!(q.stats().resent, 1);
    // The tail of an episode: every batch from step 15 on.
    let tail = StepRange {
        episode: 4,
        from_step: 15,
        to_step: StepRange::TO_END,
    };
    assert_eq!(q.resend(&tail).served, 2);
    assert_eq!(
        first_steps(&drain(&mut q)),
        [20, 10],
        "least recently sent first"
    );
    // Another episode's range finds nothing.
    let other = StepRange { episode: 5, ..tail };
    assert_eq!(q.resend(&other), ResendOutcome::default());
}

#[test]
fn a_frame_not_yet_written_counts_as_served_without_a_copy() {
    let mut q = Queue::new();
    push_batch(&mut q, 1, 0, 5).unwrap();
    let pending = q.len();
    let all = StepRange {
        episode: 1,
        from_step: 0,
        to_step: StepRange::TO_END,
    };
    assert_eq!(q.resend(&all).served, 1);
    assert_eq!(q.len(), pending, "nothing queued twice");
}

#[test]
fn resends_are_bounded_per_frame() {
    let mut q = Queue::new();
    push_batch(&mut q, 1, 0, 5).unwrap();
    drain(&mut q);
    let asked = StepRange {
        episode: 1,
        from_step: 0,
        to_step: 5,
    };
    for _ in 0..MAX_RESENDS {
        assert_eq!(q.resend(&asked).served, 1);
        drain(&mut q);
    }
    assert_eq!(
        q.resend(&asked),
        ResendOutcome {
            served: 0,
            exhausted: 1
        }
    );
    assert!(q.is_empty(), "nothing more was queued");
    assert_eq!(q.stats().refused, 1);
}

#[test]
fn new_data_evicts_the_least_recently_sent_frame_never_a_pending_one() {
    let mut q = Queue::new();
    // Four batches of ~180 bytes written, then kept.
    for step in [0, 10, 20, 30] {
        push_batch(&mut q, 1, step, 10).unwrap();
    }
    drain(&mut q);
    // Batch 0 is resent, so batch 10 is now the least recently sent.
    q.resend(&StepRange {
        episode: 1,
        from_step: 0,
        to_step: 10,
    });
    drain(&mut q);
    assert!(q.has_room(bound(10), 0));
    // Fill with unwritten data until kept frames must go, noting which go when.
    let kept_steps =
        |q: &Queue| -> Vec<u32> { q.kept().iter().map(|k| k.key.first_step).collect() };
    let mut evicted = Vec::new();
    let mut step = 40;
    loop {
        let before = kept_steps(&q);
        if push_batch(&mut q, 1, step, 10).is_err() {
            break;
        }
        let after = kept_steps(&q);
        evicted.extend(before.into_iter().filter(|s| !after.contains(s)));
        step += 10;
    }
    assert_eq!(
        evicted,
        [10, 20, 30, 0],
        "eviction order: least recently sent first"
    );
    assert_eq!(q.stats().evicted, 4);
    assert!(!q.has_room(bound(10), 0));
    assert!(
        !q.fits_once_released(bound(10), 0),
        "unwritten bytes fill the queue: a release would not help"
    );
    // What was pending all goes out, intact.
    assert_eq!(
        first_steps(&drain(&mut q)),
        (40..step).step_by(10).collect::<Vec<_>>()
    );
    // Now written and kept: the room waits for the host's release.
    assert!(!q.has_room(bound(10), 0));
    assert!(q.fits_once_released(bound(10), 0));
}

#[test]
fn a_full_index_evicts_too() {
    let mut q = RetransmitQueue::<N, 2>::new();
    for step in [0, 1, 2] {
        let (m, key) = batch(1, step, 1);
        q.push_frame(&m, 0, Some((key, bound(1)))).unwrap();
        let n = q.len();
        q.consume(n);
    }
    let kept: Vec<u32> = q.kept().iter().map(|k| k.key.first_step).collect();
    assert_eq!(kept, [1, 2]);
    assert!(!q.has_room(bound(1), 0), "no free index slot");
    assert!(q.fits_once_released(bound(1), 0), "a release frees a slot");
}

#[test]
fn end_reports_are_kept_and_released_with_their_episode() {
    let mut q = Queue::new();
    let end = DeviceMessage::Ack(AckTopic::Stop); // stands in for an episode end's bytes
    q.push_frame(&end, 0, Some((DataKey::end(6, 200), 64)))
        .unwrap();
    drain(&mut q);
    let tail = StepRange {
        episode: 6,
        from_step: 200,
        to_step: StepRange::TO_END,
    };
    assert_eq!(q.resend(&tail).served, 1);
    assert_eq!(drain(&mut q), [end]);
    q.release(&ReleaseMark {
        episode: 6,
        step: 1000,
    });
    assert_eq!(q.kept().len(), 1, "steps released, not the end");
    q.release(&ReleaseMark {
        episode: 7,
        step: 0,
    });
    assert!(q.kept().is_empty());
}

/// One operation on the queue in the model test.
#[derive(Clone, Debug)]
enum Op {
    Data(u16),
    Control,
    Write(usize),
    Release(u32),
    Resend(u32, u32),
    Received(u32, u32),
    Forget,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..30).prop_map(Op::Data),
        2 => Just(Op::Control),
        4 => (0usize..700).prop_map(Op::Write),
        1 => (0u32..400).prop_map(Op::Release),
        2 => (0u32..400, 1u32..60).prop_map(|(from, len)| Op::Resend(from, from + len)),
        1 => (0u32..400, 1u32..60).prop_map(|(from, len)| Op::Received(from, from + len)),
        1 => Just(Op::Forget),
    ]
}

proptest! {
    /// Whatever the sequence of pushes, partial writes, releases, resends and evictions:
    /// the written bytes decode into whole valid frames only; every kept frame still holds
    /// exactly the message it was pushed with; pending bytes never exceed the capacity.
    #[test]
    fn the_queue_never_garbles_a_frame(ops in prop::collection::vec(op(), 1..80)) {
        let mut q = Queue::new();
        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let mut next_step = 0u32;
        let mut pushed: std::collections::BTreeMap<u32, DeviceMessage> = Default::default();
        for op in ops {
            match op {
                Op::Data(steps) => {
                    let (m, _) = batch(1, next_step, steps);
                    if push_batch(&mut q, 1, next_step, steps).is_ok() {
                        pushed.insert(next_step, m);
                        next_step += u32::from(steps);
                    }
                }
                Op::Control => {
                    let _ = q.push_frame(&DeviceMessage::Ack(AckTopic::Run), 0, None);
                }
                Op::Write(n) => {
                    let n = n.min(q.len());
                    let mut written = q.pending()[..n].to_vec();
                    q.consume(n);
                    let mut input = written.as_mut_slice() as &[u8];
                    while let Some(m) = decoder.decode_next::<DeviceMessage>(&mut input) {
                        let m = m.map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
                        if let DeviceMessage::Transitions(b) = &m {
                            prop_assert_eq!(pushed.get(&b.first_step), Some(&m));
                        }
                    }
                }
                Op::Release(step) => q.release(&ReleaseMark { episode: 1, step }),
                Op::Resend(from, to) => {
                    q.resend(&StepRange { episode: 1, from_step: from, to_step: to });
                }
                Op::Received(from, to) => {
                    q.release_received(&StepRange { episode: 1, from_step: from, to_step: to });
                }
                Op::Forget => q.forget(),
            }
            prop_assert!(q.len() <= N);
            for k in q.kept() {
                let start = usize::from(k.offset);
                let bytes = &q.buf[start..start + usize::from(k.len)];
                let mut d = FrameDecoder::<MAX_FRAME_LEN>::new();
                let mut input = bytes;
                let m = d.decode_next::<DeviceMessage>(&mut input);
                prop_assert_eq!(m, Some(Ok(pushed[&k.key.first_step].clone())));
            }
        }
    }
}
