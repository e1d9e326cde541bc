//! The TRPO surrogate objective `L(θ) = mean(exp(log π_θ(a|s) − log π_old(a|s)) · A)`, the
//! mean KL(π_old ‖ π_θ) constraint, and their gradients (hand-written chain rule: head
//! gradient, then a VJP through the MLP).

use nalgebra::{DMatrix, DVector};

use super::policy::{Policy, PolicyEvaluation};

/// Largest log-ratio fed to `exp`; beyond it the step is absurd anyway and the KL test
/// rejects it, but the arithmetic stays finite.
const MAX_LOG_RATIO: f64 = 50.0;

/// The samples the surrogate is evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct SurrogateBatch<'a> {
    /// Observations as the policy sees them (normalised), `obs_dim × N`.
    pub observations: &'a DMatrix<f64>,
    /// Actions taken, `action_rows × N`.
    pub actions: &'a DMatrix<f64>,
    /// Advantage per sample (normalised when configured).
    pub advantages: &'a DVector<f64>,
    /// log π_old(a | s) of the policy that produced the batch.
    pub old_log_probs: &'a DVector<f64>,
}

/// Importance ratios π_θ/π_old per sample, with the exponent capped.
fn ratios(policy: &Policy, new: &PolicyEvaluation, batch: &SurrogateBatch<'_>) -> DVector<f64> {
    let log_probs = policy.head().log_prob(new.distribution(), batch.actions);
    DVector::from_fn(log_probs.len(), |i, _| {
        (log_probs[i] - batch.old_log_probs[i])
            .min(MAX_LOG_RATIO)
            .exp()
    })
}

/// `mean(ratio · A)`.
pub fn surrogate(policy: &Policy, new: &PolicyEvaluation, batch: &SurrogateBatch<'_>) -> f64 {
    let r = ratios(policy, new, batch);
    r.dot(batch.advantages) / r.len().max(1) as f64
}

/// ∇_θ `mean(ratio · A)` = `mean(ratio · A · ∇log π_θ)`; at θ_old the ratio is 1.
pub fn surrogate_gradient(
    policy: &Policy,
    params: &[f64],
    new: &PolicyEvaluation,
    batch: &SurrogateBatch<'_>,
) -> DVector<f64> {
    let r = ratios(policy, new, batch);
    let n = r.len().max(1) as f64;
    let weights: Vec<f64> = r
        .iter()
        .zip(batch.advantages.iter())
        .map(|(r, a)| r * a / n)
        .collect();
    let head_gradient =
        policy
            .head()
            .log_prob_gradient(new.distribution(), batch.actions, &weights);
    policy.backpropagate(params, new, &head_gradient)
}

/// Mean over the batch of KL(π_old ‖ π_new), in nats.
pub fn mean_kl(policy: &Policy, old: &PolicyEvaluation, new: &PolicyEvaluation) -> f64 {
    let kl = policy.head().kl(old.distribution(), new.distribution());
    kl.sum() / kl.len().max(1) as f64
}

/// Mean entropy of the batch's action distributions, in nats.
pub fn mean_entropy(policy: &Policy, eval: &PolicyEvaluation) -> f64 {
    let h = policy.head().entropy(eval.distribution());
    h.sum() / h.len().max(1) as f64
}

/// ∇_θ of the mean KL(π_old ‖ π_θ) at `params` (the parameters `new` was evaluated at): the
/// reference the exact Fisher-vector products are checked against by finite differences.
#[cfg(test)]
pub fn mean_kl_gradient(
    policy: &Policy,
    params: &[f64],
    old: &PolicyEvaluation,
    new: &PolicyEvaluation,
) -> DVector<f64> {
    let n = old.cache().batch_size();
    let weights = vec![1.0 / n.max(1) as f64; n];
    let head_gradient = policy
        .head()
        .kl_gradient(old.distribution(), new.distribution(), &weights);
    policy.backpropagate(params, new, &head_gradient)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trpo::distribution::ActionDistribution;
    use crate::trpo::kernels::Precision;
    use crate::trpo::mlp::standard_normal;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A small random policy with perturbed parameters (so log-std ≠ 0 and outputs are not
    /// tiny) and a random batch for it.
    pub(crate) struct Fixture {
        pub policy: Policy,
        pub observations: DMatrix<f64>,
        pub actions: DMatrix<f64>,
        pub advantages: DVector<f64>,
        pub old_log_probs: DVector<f64>,
    }

    pub(crate) fn fixture(head: ActionDistribution, n: usize, seed: u64) -> Fixture {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Double precision: the fixture is checked against finite differences.
        let mut policy =
            Policy::new(3, &[7, 6], head, 0.0, &mut rng).with_precision(Precision::Double);
        let params = policy
            .parameters()
            .map(|p| p + 0.3 * standard_normal(&mut rng));
        policy.set_parameters(params).expect("finite parameters");
        let observations = DMatrix::from_fn(3, n, |_, _| standard_normal(&mut rng));
        let actions = match head {
            ActionDistribution::DiagGaussian { action_dim } => {
                DMatrix::from_fn(action_dim, n, |_, _| standard_normal(&mut rng))
            }
            ActionDistribution::Categorical { n_actions } => {
                DMatrix::from_fn(1, n, |_, i| ((i * 7 + seed as usize) % n_actions) as f64)
            }
        };
        let advantages = DVector::from_fn(n, |_, _| standard_normal(&mut rng));
        let old_log_probs = policy.log_probs(&observations, &actions);
        Fixture {
            policy,
            observations,
            actions,
            advantages,
            old_log_probs,
        }
    }

    impl Fixture {
        pub(crate) fn batch(&self) -> SurrogateBatch<'_> {
            SurrogateBatch {
                observations: &self.observations,
                actions: &self.actions,
                advantages: &self.advantages,
                old_log_probs: &self.old_log_probs,
            }
        }
    }

    pub(crate) const HEADS: [ActionDistribution; 2] = [
        ActionDistribution::DiagGaussian { action_dim: 2 },
        ActionDistribution::Categorical { n_actions: 3 },
    ];

    fn central_difference(f: impl Fn(&DVector<f64>) -> f64, at: &DVector<f64>) -> DVector<f64> {
        let eps = 1e-6;
        DVector::from_fn(at.len(), |k, _| {
            let mut plus = at.clone();
            let mut minus = at.clone();
            plus[k] += eps;
            minus[k] -= eps;
            (f(&plus) - f(&minus)) / (2.0 * eps)
        })
    }

    #[test]
    fn surrogate_gradient_matches_central_differences_at_and_away_from_old() {
        for head in HEADS {
            let fx = fixture(head, 9, 11);
            let batch = fx.batch();
            let old = fx.policy.parameters().clone();
            let away = old.map(|p| p + 0.05);
            for at in [old, away] {
                let eval = fx.policy.evaluate(at.as_slice(), &fx.observations);
                let analytic = surrogate_gradient(&fx.policy, at.as_slice(), &eval, &batch);
                let numeric = central_difference(
                    |p| {
                        surrogate(
                            &fx.policy,
                            &fx.policy.evaluate(p.as_slice(), &fx.observations),
                            &batch,
                        )
                    },
                    &at,
                );
                approx::assert_abs_diff_eq!(analytic, numeric, epsilon = 1e-7);
            }
        }
    }

    #[test]
    fn mean_kl_gradient_matches_central_differences() {
        for head in HEADS {
            let fx = fixture(head, 9, 12);
            let old_params = fx.policy.parameters().clone();
            let old = fx.policy.evaluate(old_params.as_slice(), &fx.observations);
            let at = old_params.map(|p| p - 0.07);
            let new = fx.policy.evaluate(at.as_slice(), &fx.observations);
            let analytic = mean_kl_gradient(&fx.policy, at.as_slice(), &old, &new);
            let numeric = central_difference(
                |p| {
                    mean_kl(
                        &fx.policy,
                        &old,
                        &fx.policy.evaluate(p.as_slice(), &fx.observations),
                    )
                },
                &at,
            );
            approx::assert_abs_diff_eq!(analytic, numeric, epsilon = 1e-7);
            // At the old parameters the KL is a minimum: value 0 and gradient 0.
            assert!(mean_kl(&fx.policy, &old, &old).abs() < 1e-15);
            let at_old = mean_kl_gradient(&fx.policy, old_params.as_slice(), &old, &old);
            assert!(at_old.amax() < 1e-12);
        }
    }
}
