//! The host's cross-check of the device's log-probabilities.
//!
//! The device reports the log-probability of every action it sampled. The host recomputes
//! it from the parameters it uploaded, with the forward pass the device runs (the firmware's
//! tiled layout and kernels, bit for bit the shared `PolicyView::forward`, at a third of its
//! cost): a mismatch means the device ran something else than what was sent (corrupted
//! parameters, a stale buffer) and the episode must not be learned from.

use tether_firmware::policy_tiles::{TileLayout, TiledPolicy};
use tether_shared::policy::{categorical_log_prob, gaussian_log_prob};
use tether_shared::{PolicyHead, PolicySpec};

use super::episode::CollectedEpisode;

/// Largest accepted difference between host and device log-probabilities, in nats, beyond
/// a relative part of `RELATIVE_TOLERANCE`: both sides run the same f32 code, so only
/// summation-order noise is expected.
const ABSOLUTE_TOLERANCE: f32 = 1e-3;
const RELATIVE_TOLERANCE: f32 = 1e-4;

/// Whether every step's device log-probability matches the host's recomputation.
pub fn log_probs_agree(spec: &PolicySpec, params: &[f32], episode: &CollectedEpisode) -> bool {
    let mut tiled = vec![0.0f32; params.len()];
    if TileLayout::TARGET
        .scatter(spec, 0, params, &mut tiled)
        .is_err()
    {
        return false;
    }
    let Ok(policy) = TiledPolicy::new(spec, &tiled) else {
        return false;
    };
    let mut scratch = vec![0.0f32; spec.scratch_len()];
    let mut out = vec![0.0f32; spec.output_dim()];
    for record in episode.trajectory.records().iter() {
        if policy
            .forward(record.observation, &mut scratch, &mut out)
            .is_err()
        {
            return false;
        }
        let host = match (spec.head, policy.log_std()) {
            (PolicyHead::Gaussian { .. }, Some(log_std)) => {
                gaussian_log_prob(&out, log_std, record.action)
            }
            (PolicyHead::Categorical { .. }, _) => {
                match record
                    .action_index()
                    .and_then(|k| categorical_log_prob(&out, k))
                {
                    Some(lp) => lp,
                    None => return false,
                }
            }
            (PolicyHead::Gaussian { .. }, None) => return false,
        };
        let device = record.log_prob;
        if (host - device).abs() > ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * host.abs() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use tether_shared::message::{RecordAction, RecordLayout, TransitionRecords};

    use super::*;
    use crate::trpo::batch::Trajectory;

    const GAUSSIAN: RecordLayout = RecordLayout::new(1, RecordAction::Continuous { dim: 1 });

    fn spec(head: PolicyHead) -> PolicySpec {
        PolicySpec {
            obs_dim: 1,
            hidden: heapless::Vec::new(),
            head,
            normalize_obs: false,
        }
    }

    /// A one-step episode as the device reported it.
    fn episode(layout: RecordLayout, obs: f32, action: f32, log_prob: f32) -> CollectedEpisode {
        let values = [obs, action, 0.0, log_prob];
        let mut trajectory = Trajectory::new(layout);
        trajectory
            .extend(TransitionRecords::new_checked(layout, &values).expect("a valid record"))
            .expect("same layout");
        CollectedEpisode {
            episode: 0,
            first_step: 0,
            episode_length: None,
            policy_version: 1,
            trajectory,
            complete_return: None,
            worst_step_us: 0,
            missed_deadlines: 0,
        }
    }

    #[test]
    fn gaussian_log_prob_matches_closed_form_and_catches_corruption() {
        // mean = 2·obs + 0.5, log_std = ln 0.5.
        let s = spec(PolicyHead::Gaussian { action_dim: 1 });
        let log_std = 0.5f32.ln();
        let params = [2.0, 0.5, log_std];
        let (obs, action) = (0.25f32, 1.3f32);
        let mean = 2.0 * obs + 0.5;
        let z = (action - mean) / 0.5;
        let closed = -0.5 * z * z - log_std - 0.5 * (2.0 * std::f32::consts::PI).ln();
        let agree = |params: &[f32], log_prob| {
            log_probs_agree(&s, params, &episode(GAUSSIAN, obs, action, log_prob))
        };
        assert!(agree(&params, closed));
        assert!(!agree(&params, closed + 0.01));
        // The device ran other weights than the host sent.
        assert!(!agree(&[2.1, 0.5, log_std], closed));
    }

    #[test]
    fn categorical_log_prob_is_log_softmax() {
        // logits = [obs, -obs] + [0, 1].
        let s = spec(PolicyHead::Categorical { n: 2 });
        let params = [1.0, -1.0, 0.0, 1.0];
        let logits = [0.5f32, 0.5];
        let expected = 0.5 - (logits[0].exp() + logits[1].exp()).ln();
        let two = RecordLayout::new(1, RecordAction::Discrete { n: 2 });
        assert!(log_probs_agree(
            &s,
            &params,
            &episode(two, 0.5, 0.0, expected)
        ));
        assert!(log_probs_agree(
            &s,
            &params,
            &episode(two, 0.5, 1.0, expected)
        ));
        assert!(!log_probs_agree(
            &s,
            &params,
            &episode(two, 0.5, 1.0, expected + 0.01)
        ));
        // A choice the policy does not have (the device claims three).
        let three = RecordLayout::new(1, RecordAction::Discrete { n: 3 });
        assert!(
            !log_probs_agree(&s, &params, &episode(three, 0.5, 2.0, expected)),
            "index out of range"
        );
    }
}
