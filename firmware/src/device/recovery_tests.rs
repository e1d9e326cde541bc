//! The runtime's side of data recovery: the retransmit ring behind `Resend` and `Release`,
//! batch limits, and commands repeated after a lost acknowledgement.
extern crate std;

use std::vec::Vec;

use tether_shared::DeviceMessage;
use tether_shared::message::{
    AckTopic, HostMessage, ReleaseMark, RunMode, StepRange, TransitionBatch,
};

use super::tests::{Rig, batches, ends, run, spec};
use crate::retransmit::MAX_RESENDS;
use crate::testkit::{Integrator, params_for};

/// An integrator device running one explore episode of `steps` steps, with batches of
/// `limit` values (the integrator's records are 5 values).
fn running(steps: u32, limit: u16) -> Rig {
    let mut plant = Integrator::new(false);
    plant.episode_steps = steps;
    let mut rig = Rig::new(plant);
    let s = spec(false);
    rig.upload(1, &s, &params_for(&s, 2, -1.0));
    rig.exchange(&HostMessage::BatchLimit { values: limit });
    rig.exchange(&run(1, RunMode::Explore, 5));
    rig
}

fn not_retained(msgs: &[DeviceMessage]) -> Vec<StepRange> {
    msgs.iter()
        .filter_map(|m| match m {
            DeviceMessage::NotRetained(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn owned(msgs: &[DeviceMessage]) -> Vec<TransitionBatch> {
    batches(msgs).into_iter().cloned().collect()
}

#[test]
fn a_batch_limit_gives_smaller_batches_of_whole_records() {
    let mut rig = running(40, 23);
    let msgs = rig.run_for(45);
    let sizes: Vec<usize> = batches(&msgs).iter().map(|b| b.values.len()).collect();
    assert_eq!(sizes, [20; 10], "four 5-value records per batch: {sizes:?}");
    // Below one record the limit is one record.
    let mut rig = running(6, 1);
    let sizes: Vec<usize> = batches(&rig.run_for(10))
        .iter()
        .map(|b| b.values.len())
        .collect();
    assert_eq!(sizes, [5; 6]);
}

#[test]
fn a_resend_repeats_the_frames_asked_for_bit_for_bit() {
    let mut rig = running(40, 50);
    let first = owned(&rig.run_for(45));
    assert_eq!(first.len(), 4);
    let asked = StepRange {
        episode: 10,
        from_step: 10,
        to_step: 30,
    };
    let again = owned(&rig.exchange(&HostMessage::Resend(asked)));
    assert_eq!(again, first[1..3].to_vec());
    // The tail: the last batch and the episode end.
    let tail = StepRange {
        episode: 10,
        from_step: 30,
        to_step: StepRange::TO_END,
    };
    let msgs = rig.exchange(&HostMessage::Resend(tail));
    assert_eq!(owned(&msgs), first[3..].to_vec());
    assert_eq!(ends(&msgs).len(), 1);
    assert_eq!(ends(&msgs)[0].length, 40);
    assert_eq!(rig.dev.retransmit_stats().resent, 4);
}

#[test]
fn released_frames_are_gone_and_said_to_be() {
    let mut rig = running(40, 50);
    rig.run_for(45);
    rig.exchange(&HostMessage::Release(ReleaseMark {
        episode: 10,
        step: 20,
    }));
    let released = StepRange {
        episode: 10,
        from_step: 0,
        to_step: 20,
    };
    let msgs = rig.exchange(&HostMessage::Resend(released));
    assert!(batches(&msgs).is_empty());
    assert_eq!(not_retained(&msgs), [released]);
    // What is not released is still there.
    let kept = StepRange {
        episode: 10,
        from_step: 20,
        to_step: 30,
    };
    assert_eq!(batches(&rig.exchange(&HostMessage::Resend(kept))).len(), 1);
    assert_eq!(rig.dev.retransmit_stats().refused, 1);
}

/// Ranges that never existed (an episode before the run, a step past the episode's end) are
/// refused and counted; a range the episode has not reached yet gets no answer (it is
/// coming) but is counted too.
#[test]
fn ranges_never_sent_are_refused_and_counted() {
    let mut rig = running(100, 50);
    rig.run_for(25); // 25 steps: two batches of 10 sent, five steps in the open batch
    let before_run = StepRange {
        episode: 3,
        from_step: 0,
        to_step: StepRange::TO_END,
    };
    assert_eq!(
        not_retained(&rig.exchange(&HostMessage::Resend(before_run))),
        [before_run]
    );
    let future = StepRange {
        episode: 10,
        from_step: 20,
        to_step: StepRange::TO_END,
    };
    let msgs = rig.exchange(&HostMessage::Resend(future));
    assert!(not_retained(&msgs).is_empty() && batches(&msgs).is_empty());
    let later_episode = StepRange {
        episode: 11,
        ..future
    };
    let msgs = rig.exchange(&HostMessage::Resend(later_episode));
    assert!(not_retained(&msgs).is_empty() && batches(&msgs).is_empty());
    assert_eq!(rig.dev.retransmit_stats().refused, 3);
}

/// A host that asks for the same frame forever gets it `MAX_RESENDS` times, then a refusal
/// each time; the device's state stays bounded and it keeps running.
#[test]
fn a_frame_asked_for_forever_is_refused_after_its_resends() {
    let mut rig = running(1000, 50);
    rig.run_for(15);
    let asked = StepRange {
        episode: 10,
        from_step: 0,
        to_step: 10,
    };
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..3 * MAX_RESENDS as usize {
        let msgs = rig.exchange(&HostMessage::Resend(asked));
        served += batches(&msgs).len();
        refused += not_retained(&msgs).len();
    }
    assert_eq!(served, MAX_RESENDS as usize);
    assert_eq!(refused, 2 * MAX_RESENDS as usize);
    let more = rig.run_for(20);
    assert!(!batches(&more).is_empty(), "the run goes on");
}

/// Without releases, a long episode outgrows the ring: the oldest frames are evicted (a
/// real-time device never waits for the host), the episode completes, and a request for an
/// evicted frame is answered `NotRetained`.
#[test]
fn a_full_ring_evicts_the_oldest_frames_and_the_episode_goes_on() {
    // 500 steps: ten full batches of about 1 KB, against a ring of about 4 KB.
    let mut rig = running(500, 240);
    let msgs = rig.run_for(505);
    let e = ends(&msgs);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].length, 500);
    assert_eq!(
        e[0].reason,
        tether_shared::message::EpisodeEndReason::Truncated
    );
    assert!(rig.dev.retransmit_stats().evicted > 0);
    let oldest = StepRange {
        episode: 10,
        from_step: 0,
        to_step: 48,
    };
    assert_eq!(
        not_retained(&rig.exchange(&HostMessage::Resend(oldest))),
        [oldest]
    );
}

#[test]
fn a_repeated_run_command_does_not_restart_the_run() {
    let mut rig = running(40, 240);
    rig.run_for(15);
    let msgs = rig.exchange(&run(1, RunMode::Explore, 5));
    assert!(msgs.contains(&DeviceMessage::Ack(AckTopic::Run)));
    assert!(ends(&msgs).is_empty(), "the episode under way goes on");
    let rest = rig.run_for(30);
    let e = ends(&rest);
    assert_eq!((e.len(), e[0].length), (1, 40));
    // After a stop the same command starts a new run.
    rig.exchange(&HostMessage::Stop);
    let msgs = rig.exchange(&run(1, RunMode::Explore, 5));
    assert!(msgs.contains(&DeviceMessage::Ack(AckTopic::Run)));
    assert_eq!(
        rig.dev.state(),
        tether_shared::message::DeviceState::Running
    );
}
