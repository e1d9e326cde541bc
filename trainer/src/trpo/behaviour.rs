//! A frozen copy of the policy as one version ran on the devices (with its observation
//! normaliser), so the host can recompute the log-probabilities of the actions the devices
//! took — from raw f32 episode data — and cross-check the devices' own values. It is plain
//! data (`Send + Sync`), so rollout workers can share it while the learner moves on.

use nalgebra::DVector;

use super::batch::{BatchError, Episode, EpisodeEnd, RolloutBatch};
use super::normalizer::ObservationNormalizer;
use super::policy::Policy;

/// The policy and normaliser of one policy version.
#[derive(Clone, Debug)]
pub struct BehaviourPolicy {
    policy: Policy,
    normalizer: Option<ObservationNormalizer>,
}

impl BehaviourPolicy {
    /// A snapshot of `policy` with the (frozen) `normalizer` it runs behind.
    pub fn new(policy: Policy, normalizer: Option<ObservationNormalizer>) -> Self {
        Self { policy, normalizer }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// log π(a | s) in nats (f64, from the f64 parameters) for `len` steps of raw device
    /// data: `observations` row-major `len × obs_dim` (before normalisation), `actions`
    /// row-major `len × action_rows` (Gaussian actions before clamping, or the categorical
    /// index). Refuses widths that do not fit, non-finite values and invalid indices; no
    /// steps gives no values.
    pub fn log_probs_f32(
        &self,
        observations: &[f32],
        actions: &[f32],
    ) -> Result<Vec<f64>, BatchError> {
        let obs_dim = self.policy.obs_dim();
        let action_rows = self.policy.head().action_rows();
        let steps = observations.len() / obs_dim.max(1);
        let widths = [
            ("observation", observations.len(), obs_dim),
            ("action", actions.len(), action_rows),
        ];
        for (what, found, width) in widths {
            if found != steps * width {
                return Err(BatchError::WrongWidth {
                    episode: 0,
                    step: found / width.max(1),
                    what,
                    found: found % width.max(1),
                    expected: width,
                });
            }
        }
        if steps == 0 {
            return Ok(Vec::new());
        }
        let rows = |data: &[f32], width: usize| {
            data.chunks_exact(width)
                .map(|row| row.iter().map(|&v| f64::from(v)).collect())
                .collect()
        };
        let batch = RolloutBatch {
            episodes: vec![Episode {
                observations: rows(observations, obs_dim),
                actions: rows(actions, action_rows),
                rewards: vec![0.0; steps],
                end: EpisodeEnd::Terminated,
            }],
        };
        batch.validate(obs_dim, self.policy.head())?;
        let raw = batch.observation_matrix(obs_dim);
        let observations = match &self.normalizer {
            Some(normalizer) => normalizer.normalize(&raw),
            None => raw,
        };
        let log_probs: DVector<f64> = self
            .policy
            .log_probs(&observations, &batch.action_matrix(action_rows));
        Ok(log_probs.as_slice().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trpo::distribution::PolicyHead;
    use nalgebra::DMatrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn raw_f32_log_probs_equal_the_policy_on_normalised_f64_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let policy = Policy::new(
            2,
            &[8],
            PolicyHead::DiagGaussian { action_dim: 1 },
            -0.3,
            &mut rng,
        );
        let mut normalizer = ObservationNormalizer::new(2);
        normalizer.update(&DMatrix::from_row_slice(
            2,
            3,
            &[1.0, 2.0, 4.0, -1.0, 0.0, 3.0],
        ));
        let behaviour = BehaviourPolicy::new(policy.clone(), Some(normalizer.clone()));
        let obs = [0.5f32, -1.0, 2.0, 0.25];
        let actions = [0.1f32, -0.7];
        let got = behaviour.log_probs_f32(&obs, &actions).expect("valid");
        let x = DMatrix::from_column_slice(2, 2, &obs.map(f64::from));
        let a = DMatrix::from_column_slice(1, 2, &actions.map(f64::from));
        let expected = policy.log_probs(&normalizer.normalize(&x), &a);
        assert_eq!(got, expected.as_slice());
    }

    #[test]
    fn bad_shapes_values_and_indices_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let policy = Policy::new(
            2,
            &[4],
            PolicyHead::Categorical { n_actions: 3 },
            0.0,
            &mut rng,
        );
        let behaviour = BehaviourPolicy::new(policy, None);
        assert_eq!(behaviour.log_probs_f32(&[], &[]), Ok(Vec::new()));
        assert!(matches!(
            behaviour.log_probs_f32(&[1.0, 2.0, 3.0], &[0.0]),
            Err(BatchError::WrongWidth {
                what: "observation",
                ..
            })
        ));
        assert!(matches!(
            behaviour.log_probs_f32(&[1.0, 2.0], &[0.0, 1.0]),
            Err(BatchError::WrongWidth { what: "action", .. })
        ));
        assert!(matches!(
            behaviour.log_probs_f32(&[1.0, f32::NAN], &[0.0]),
            Err(BatchError::NonFinite { .. })
        ));
        assert!(matches!(
            behaviour.log_probs_f32(&[1.0, 2.0], &[3.0]),
            Err(BatchError::InvalidActionIndex { .. })
        ));
        let probabilities: f64 = (0..3)
            .map(|a| {
                behaviour
                    .log_probs_f32(&[1.0, 2.0], &[a as f32])
                    .expect("valid")[0]
                    .exp()
            })
            .sum();
        approx::assert_relative_eq!(probabilities, 1.0, max_relative = 1e-12);
    }
}
