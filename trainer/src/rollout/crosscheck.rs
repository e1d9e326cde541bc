//! The host's cross-check of the device's log-probabilities.
//!
//! The device reports the log-probability of every action it sampled. The host recomputes
//! it from the parameters it uploaded, with the shared forward pass's arithmetic (bit for
//! bit what the device computes), evaluated [`LANES`] steps at a time
//! ([`super::batched_forward`]): a mismatch means the device ran something else than what
//! was sent (corrupted parameters, a stale buffer) and the episode must not be learned
//! from.

use tether_shared::message::TransitionRecord;
use tether_shared::policy::sde::{sde_std_matrix, sde_variance};
use tether_shared::policy::{
    categorical_log_prob, gaussian_log_prob, gaussian_log_prob_with_variance,
};
use tether_shared::{PolicyHead, PolicySpec};

use super::batched_forward::{BatchedPolicy, LANES};
use super::episode::CollectedEpisode;

/// Largest accepted difference between host and device log-probabilities, in nats, beyond
/// a relative part of `RELATIVE_TOLERANCE`: both sides run the same f32 code, so only
/// summation-order noise is expected.
const ABSOLUTE_TOLERANCE: f32 = 1e-3;
const RELATIVE_TOLERANCE: f32 = 1e-4;

/// Whether every step's device log-probability matches the host's recomputation.
pub fn log_probs_agree(spec: &PolicySpec, params: &[f32], episode: &CollectedEpisode) -> bool {
    let Ok(policy) = BatchedPolicy::new(spec, params) else {
        return false;
    };
    let Some(head) = HostHead::of(spec, policy.log_std()) else {
        return false;
    };
    let mut scratch = policy.scratch();
    let mut out = vec![[0.0f32; LANES]; spec.output_dim()];
    // One step's network output and features, gathered from its lane.
    let mut output = vec![0.0f32; spec.output_dim()];
    let mut features = vec![0.0f32; spec.features_dim()];
    let mut records = episode.trajectory.records().iter();
    let mut block: Vec<TransitionRecord<'_>> = Vec::with_capacity(LANES);
    let mut observations: Vec<&[f32]> = Vec::with_capacity(LANES);
    loop {
        block.clear();
        block.extend(records.by_ref().take(LANES));
        if block.is_empty() {
            return true;
        }
        observations.clear();
        observations.extend(block.iter().map(|record| record.observation));
        let Ok(block_features) = policy.forward_block(&observations, &mut scratch, &mut out) else {
            return false;
        };
        for (lane, record) in block.iter().enumerate() {
            gather(&out, lane, &mut output);
            if head.reads_features() {
                gather(block_features, lane, &mut features);
            }
            let index = record.action_index();
            let Some(host) = head.log_prob(&output, &features, record.action, index) else {
                return false;
            };
            let device = record.log_prob;
            if (host - device).abs() > ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * host.abs() {
                return false;
            }
        }
    }
}

/// Copies lane `lane` of every row into `values`.
fn gather(rows: &[[f32; LANES]], lane: usize, values: &mut [f32]) {
    for (value, row) in values.iter_mut().zip(rows) {
        *value = row[lane];
    }
}

/// What the host needs besides the network's output to recompute a log-probability.
enum HostHead<'a> {
    /// The Gaussian's log-stds.
    Gaussian(&'a [f32]),
    Categorical,
    /// The gSDE head's σ matrix (`features × actions`) and a buffer for the variances.
    Sde {
        std: Vec<f32>,
        actions: usize,
    },
}

impl<'a> HostHead<'a> {
    /// `None` when the parameters do not give the head what it needs (no log-std, a σ that
    /// is not finite and positive).
    fn of(spec: &PolicySpec, log_std: Option<&'a [f32]>) -> Option<Self> {
        match spec.head {
            PolicyHead::Gaussian { .. } => log_std.map(HostHead::Gaussian),
            PolicyHead::Categorical { .. } => Some(HostHead::Categorical),
            PolicyHead::GaussianSde(head) => {
                let mut std = vec![0.0f32; spec.noise_len()];
                sde_std_matrix(&head, log_std?, &mut std).then_some(HostHead::Sde {
                    std,
                    actions: usize::from(head.action_dim),
                })
            }
        }
    }

    /// Whether [`HostHead::log_prob`] reads the features.
    fn reads_features(&self) -> bool {
        matches!(self, HostHead::Sde { .. })
    }

    /// The log-probability of one record's action given the network's output and features.
    fn log_prob(
        &self,
        out: &[f32],
        features: &[f32],
        action: &[f32],
        index: Option<usize>,
    ) -> Option<f32> {
        match self {
            HostHead::Gaussian(log_std) => Some(gaussian_log_prob(out, log_std, action)),
            HostHead::Categorical => categorical_log_prob(out, index?),
            HostHead::Sde { std, actions } => {
                let mut variance = [0.0f32; tether_shared::plant::MAX_ACTION_DIM];
                let variance = variance.get_mut(..*actions)?;
                sde_variance(features, std, variance);
                Some(gaussian_log_prob_with_variance(out, variance, action))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tether_shared::message::{RecordAction, RecordLayout};

    use super::*;

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
        CollectedEpisode::of_records(layout, &[obs, action, 0.0, log_prob])
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

    /// gSDE: no hidden layer, so the features are the observation `[obs]`; mean
    /// `2·obs + 0.5`, σ = e^L, variance `obs²σ² + ε`.
    #[test]
    fn gsde_log_prob_is_the_state_dependent_gaussian_and_catches_corruption() {
        let head = PolicyHead::GaussianSde(tether_shared::policy::SdeHead {
            action_dim: 1,
            full_std: true,
            use_expln: false,
            resample_every: 4,
        });
        let s = spec(head);
        assert_eq!(s.param_count(), 3);
        let log_std = 0.5f32.ln();
        let params = [2.0, 0.5, log_std];
        let (obs, action) = (0.25f32, 1.3f32);
        let mean = 2.0 * obs + 0.5;
        let variance = obs * obs * 0.25 + 1e-6;
        let closed = -0.5 * (action - mean).powi(2) / variance
            - 0.5 * variance.ln()
            - 0.5 * (2.0 * std::f32::consts::PI).ln();
        let agree = |params: &[f32], log_prob| {
            log_probs_agree(&s, params, &episode(GAUSSIAN, obs, action, log_prob))
        };
        assert!(agree(&params, closed));
        assert!(!agree(&params, closed + 0.01));
        // A σ matrix other than the one sent (or one the device could not use).
        assert!(!agree(&[2.0, 0.5, 0.7f32.ln()], closed));
        assert!(!agree(&[2.0, 0.5, f32::NAN], closed));
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
