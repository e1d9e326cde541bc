use tether_shared::message::{RecordAction, RecordLayout, TransitionRecords};

use super::*;
use crate::trpo::Trpo;
use crate::trpo::batch::RolloutBatch;
use crate::trpo::distribution::ActionDistribution;
use crate::trpo::hyperparams::TrpoConfig;

/// obs_dim 1, one action: [obs, action, reward, log_prob].
const LAYOUT: RecordLayout = RecordLayout::new(1, RecordAction::Continuous { dim: 1 });

/// Records of steps `[from, to)`: observation `step / 10`, action `-step`, reward
/// `1 + step²/100` (every step distinct), log-probability `-1`.
fn steps(from: u32, to: u32) -> Vec<f32> {
    (from..to)
        .flat_map(|s| {
            let s = s as f32;
            [s / 10.0, -s, 1.0 + s * s / 100.0, -1.0]
        })
        .collect()
}

fn records(values: &[f32]) -> TransitionRecords<'_> {
    TransitionRecords::new_checked(LAYOUT, values).expect("valid records")
}

fn runs_of(stretches: &[(u32, u32)]) -> EpisodeRuns {
    let mut runs = EpisodeRuns::new(LAYOUT);
    for &(from, to) in stretches {
        let values = steps(from, to);
        assert!(matches!(
            runs.insert(from, records(&values)),
            Inserted::New { .. }
        ));
    }
    runs
}

fn observations(t: &Trajectory) -> Vec<f32> {
    t.records().iter().map(|r| r.observation[0]).collect()
}

#[test]
fn batches_join_in_any_order_and_duplicates_are_recognised() {
    let mut runs = EpisodeRuns::new(LAYOUT);
    assert_eq!((runs.held(), runs.end(), runs.prefix()), (0, 0, 0));
    let b = |from, to| steps(from, to);
    assert_eq!(
        runs.insert(0, records(&b(0, 4))),
        Inserted::New {
            steps: 4,
            filled: 0
        }
    );
    assert_eq!(
        runs.insert(8, records(&b(8, 12))),
        Inserted::New {
            steps: 4,
            filled: 0
        }
    );
    assert_eq!(runs.gaps(), [(4, 8)]);
    assert_eq!((runs.prefix(), runs.end(), runs.held()), (4, 12, 8));
    // The resent batch fills the gap and joins the runs.
    assert_eq!(
        runs.insert(4, records(&b(4, 8))),
        Inserted::New {
            steps: 4,
            filled: 4
        }
    );
    assert!(runs.gaps().is_empty());
    assert_eq!((runs.prefix(), runs.held()), (12, 12));
    assert_eq!(runs.prefix_records().values(), steps(0, 12).as_slice());
    // The same frame twice, or a part of one held: a duplicate.
    assert_eq!(runs.insert(4, records(&b(4, 8))), Inserted::Duplicate);
    assert_eq!(runs.insert(5, records(&b(5, 6))), Inserted::Duplicate);
    // Overlapping and extending: the new part is kept.
    assert_eq!(
        runs.insert(10, records(&b(10, 14))),
        Inserted::New {
            steps: 2,
            filled: 0
        }
    );
    assert_eq!(runs.end(), 14);
}

#[test]
fn a_step_held_with_other_bits_is_a_conflict_and_changes_nothing() {
    let mut runs = runs_of(&[(0, 4)]);
    let mut other = steps(2, 6);
    other[2] += 1.0; // step 2's reward differs
    assert_eq!(runs.insert(2, records(&other)), Inserted::Conflict);
    assert_eq!((runs.held(), runs.end()), (4, 4), "nothing of it was kept");
    let mut wrong_layout = EpisodeRuns::new(RecordLayout::new(2, RecordAction::Discrete { n: 2 }));
    assert_eq!(
        wrong_layout.insert(0, records(&steps(0, 1))),
        Inserted::Conflict
    );
    assert_eq!(
        runs.insert(u32::MAX, records(&steps(0, 2))),
        Inserted::Conflict
    );
}

#[test]
fn an_episode_without_gaps_keeps_its_own_ending() {
    let runs = runs_of(&[(0, 6)]);
    let cut = runs.cut(Some((&EpisodeEnding::Terminated, 6)));
    assert_eq!(cut.lost_steps, 0);
    assert_eq!(cut.segments.len(), 1);
    assert_eq!(cut.segments[0].first_step, 0);
    assert_eq!(cut.segments[0].trajectory.len(), 6);
    assert_eq!(
        cut.segments[0].trajectory.ending(),
        &EpisodeEnding::Terminated
    );
    let truncated = EpisodeEnding::Truncated {
        final_obs: vec![0.6],
    };
    let cut = runs.cut(Some((&truncated, 6)));
    assert_eq!(cut.segments[0].trajectory.ending(), &truncated);
}

/// Steps 0–3 and 7–9 of a 10-step episode arrived: the first segment drops step 3 and
/// bootstraps from its observation; the second keeps the episode's ending. Lost: 4, 5, 6
/// and the dropped 3.
#[test]
fn a_gap_cuts_the_episode_into_correctly_ended_segments() {
    let runs = runs_of(&[(7, 10), (0, 4)]);
    assert_eq!(runs.gaps(), [(4, 7)]);
    let cut = runs.cut(Some((&EpisodeEnding::Terminated, 10)));
    assert_eq!(cut.lost_steps, 4);
    let [a, b] = cut.segments.as_slice() else {
        panic!("two segments: {:?}", cut.segments);
    };
    assert_eq!((a.first_step, b.first_step), (0, 7));
    assert_eq!(observations(&a.trajectory), [0.0, 0.1, 0.2]);
    assert_eq!(
        a.trajectory.ending(),
        &EpisodeEnding::Truncated {
            final_obs: vec![0.3]
        }
    );
    assert_eq!(observations(&b.trajectory), [0.7, 0.8, 0.9]);
    assert_eq!(b.trajectory.ending(), &EpisodeEnding::Terminated);
}

#[test]
fn missing_starts_ends_and_single_records_are_handled() {
    // The first steps and the end report never came: both runs are cut.
    let runs = runs_of(&[(3, 6), (8, 9)]);
    let cut = runs.cut(None);
    assert_eq!(
        cut.segments.len(),
        1,
        "the one-record run leaves nothing to learn from"
    );
    assert_eq!(cut.segments[0].first_step, 3);
    assert_eq!(observations(&cut.segments[0].trajectory), [0.3, 0.4]);
    assert_eq!(
        cut.lost_steps,
        9 - 2,
        "of the 9 steps known to exist, 2 are kept"
    );
    // The end report came but the last run falls short of the length: cut too.
    let cut = runs_of(&[(0, 5)]).cut(Some((&EpisodeEnding::Terminated, 8)));
    assert_eq!(cut.segments[0].trajectory.len(), 4);
    assert!(matches!(
        cut.segments[0].trajectory.ending(),
        EpisodeEnding::Truncated { .. }
    ));
    assert_eq!(cut.lost_steps, 4);
    assert_eq!(EpisodeRuns::new(LAYOUT).cut(None).segments, []);
}

/// GAE(γ, λ) by hand over one segment's rewards and values, with `after` the value
/// following its last step.
fn hand_gae(rewards: &[f64], values: &[f64], after: f64, gamma: f64, lambda: f64) -> Vec<f64> {
    let mut out = vec![0.0; rewards.len()];
    let mut running = 0.0;
    for t in (0..rewards.len()).rev() {
        let next = if t + 1 < rewards.len() {
            values[t + 1]
        } else {
            after
        };
        running = rewards[t] + gamma * next - values[t] + gamma * lambda * running;
        out[t] = running;
    }
    out
}

/// What the learner makes of a cut episode: each segment's advantages are GAE over its own
/// steps — the one before the gap bootstrapping from V of the dropped record's observation,
/// the last one ending as the episode did — and the last segment's advantages are those the
/// same steps get in the whole, uncut episode (nothing before a gap leaks into them).
#[test]
fn the_learner_bootstraps_each_segment_of_a_cut_episode_correctly() {
    let config = TrpoConfig {
        policy_hidden: vec![8],
        value_hidden: vec![8],
        ..TrpoConfig::default()
    };
    let (gamma, lambda) = (config.gamma, config.gae_lambda);
    let learner = Trpo::new(
        1,
        ActionDistribution::DiagGaussian { action_dim: 1 },
        config,
        3,
    )
    .expect("valid learner");
    let v = |obs: f32| {
        learner
            .value_function()
            .predict(&nalgebra::DMatrix::from_element(1, 1, f64::from(obs)))[0]
    };
    let whole = runs_of(&[(0, 12)]).cut(Some((&EpisodeEnding::Terminated, 12)));
    let cut = runs_of(&[(0, 5), (8, 12)]).cut(Some((&EpisodeEnding::Terminated, 12)));
    let mut batch = RolloutBatch::new(LAYOUT);
    for segment in &cut.segments {
        batch.push(&segment.trajectory).expect("same layout");
    }
    let (advantages, values) = learner.advantages_for(&batch);
    assert_eq!(advantages.len(), 4 + 4);

    // Segment A: steps 0–3, bootstrapping from V(observation of step 4).
    let rewards = |from: u32, to: u32| -> Vec<f64> {
        (from..to)
            .map(|s| f64::from(1.0 + (s * s) as f32 / 100.0))
            .collect()
    };
    let expected_a = hand_gae(&rewards(0, 4), &values[..4], v(0.4), gamma, lambda);
    // Segment B: steps 8–11, terminated.
    let expected_b = hand_gae(&rewards(8, 12), &values[4..], 0.0, gamma, lambda);
    for (got, want) in advantages.iter().zip(expected_a.iter().chain(&expected_b)) {
        approx::assert_relative_eq!(*got, *want, max_relative = 1e-12, epsilon = 1e-12);
    }
    let mut whole_batch = RolloutBatch::new(LAYOUT);
    whole_batch
        .push(&whole.segments[0].trajectory)
        .expect("same layout");
    let (whole_advantages, _) = learner.advantages_for(&whole_batch);
    for (got, want) in advantages[4..].iter().zip(&whole_advantages[8..]) {
        approx::assert_relative_eq!(*got, *want, max_relative = 1e-12, epsilon = 1e-12);
    }
    // And the first segment is not the whole episode's first steps: the cut is real.
    assert!((advantages[3] - whole_advantages[3]).abs() > 1e-9);
}
