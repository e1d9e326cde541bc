//! Policy heads: the action distribution built from the MLP outputs.
//!
//! * `DiagGaussian`: the MLP outputs are the means; a state-independent log-std vector (its
//!   own parameters, stored after the MLP parameters in the flat policy vector) sets the
//!   spread.
//! * `Categorical`: the MLP outputs are the logits.
//!
//! For each head: log-probability, entropy, KL(old ‖ new) per sample, their gradients with
//! respect to the distribution parameters, and the Fisher of the distribution in its own
//! parameters (`M` in the Gauss–Newton form `Jᵀ M J` of the policy's Fisher).

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use tether_shared::{ActionSpace, PlantDescription};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Which action distribution the policy outputs (the learner's f64 counterpart of the
/// shared [`tether_shared::PolicyHead`], named by what it computes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionDistribution {
    /// Continuous actions: `N(mean(obs), diag(exp(log_std))²)`.
    DiagGaussian {
        /// Number of action dimensions.
        action_dim: usize,
    },
    /// Discrete actions `0..n_actions`, softmax of the logits.
    Categorical {
        /// Number of discrete actions.
        n_actions: usize,
    },
}

/// The distribution parameters of a batch: MLP outputs (`output_dim × N`, one sample per
/// column) and the head's own parameters (the Gaussian log-std; empty for categorical).
#[derive(Clone, Copy, Debug)]
pub struct DistributionBatch<'a> {
    /// Means (Gaussian) or logits (categorical), one column per sample.
    pub outputs: &'a DMatrix<f64>,
    /// State-independent log standard deviations (Gaussian only), natural log of action units.
    pub log_std: &'a [f64],
}

/// A gradient with respect to the distribution parameters, summed with per-sample weights.
#[derive(Clone, Debug)]
pub struct HeadGradient {
    /// ∂/∂outputs per sample (already multiplied by that sample's weight).
    pub outputs: DMatrix<f64>,
    /// ∂/∂log_std summed over samples (empty for categorical).
    pub log_std: DVector<f64>,
}

impl ActionDistribution {
    /// The distribution over the actions `plant` accepts.
    pub fn of_plant(plant: &PlantDescription) -> Self {
        match &plant.action {
            ActionSpace::Continuous { low, .. } => ActionDistribution::DiagGaussian {
                action_dim: low.len(),
            },
            ActionSpace::Discrete { n } => ActionDistribution::Categorical {
                n_actions: usize::from(*n),
            },
        }
    }

    /// Width of the MLP output layer this head reads.
    pub fn mlp_output_dim(&self) -> usize {
        match *self {
            Self::DiagGaussian { action_dim } => action_dim,
            Self::Categorical { n_actions } => n_actions,
        }
    }

    /// Parameters the head owns besides the MLP (the log-std vector for the Gaussian).
    pub fn own_parameter_count(&self) -> usize {
        match *self {
            Self::DiagGaussian { action_dim } => action_dim,
            Self::Categorical { .. } => 0,
        }
    }

    /// Rows of an action matrix: the action dimension, or 1 (the index as f64) for
    /// categorical.
    pub fn action_rows(&self) -> usize {
        match *self {
            Self::DiagGaussian { action_dim } => action_dim,
            Self::Categorical { .. } => 1,
        }
    }

    /// Fisher of the head's own parameters per sample: 2 for each Gaussian log-std (the same
    /// for every sample because the log-std does not depend on the state).
    pub fn own_parameter_fisher(&self) -> f64 {
        2.0
    }

    /// log π(a | s) per sample; `actions` is `action_rows × N`.
    pub fn log_prob(&self, dist: DistributionBatch<'_>, actions: &DMatrix<f64>) -> DVector<f64> {
        let n = dist.outputs.ncols();
        match *self {
            Self::DiagGaussian { action_dim } => {
                let constant: f64 =
                    dist.log_std.iter().sum::<f64>() + 0.5 * LN_2PI * action_dim as f64;
                DVector::from_fn(n, |i, _| {
                    let mut quadratic = 0.0;
                    for d in 0..action_dim {
                        let z = (actions[(d, i)] - dist.outputs[(d, i)]) * (-dist.log_std[d]).exp();
                        quadratic += z * z;
                    }
                    -0.5 * quadratic - constant
                })
            }
            Self::Categorical { n_actions } => DVector::from_fn(n, |i, _| {
                let logits = dist.outputs.column(i);
                logits[action_index(actions[(0, i)], n_actions)] - log_sum_exp(logits.iter())
            }),
        }
    }

    /// Entropy per sample, in nats.
    pub fn entropy(&self, dist: DistributionBatch<'_>) -> DVector<f64> {
        let n = dist.outputs.ncols();
        match *self {
            Self::DiagGaussian { action_dim } => {
                let h = dist.log_std.iter().sum::<f64>() + 0.5 * (1.0 + LN_2PI) * action_dim as f64;
                DVector::from_element(n, h)
            }
            Self::Categorical { .. } => DVector::from_fn(n, |i, _| {
                let p = softmax(dist.outputs.column(i).iter());
                -p.iter()
                    .filter(|&&pk| pk > 0.0)
                    .map(|pk| pk * pk.ln())
                    .sum::<f64>()
            }),
        }
    }

    /// KL(old ‖ new) per sample, in nats.
    pub fn kl(&self, old: DistributionBatch<'_>, new: DistributionBatch<'_>) -> DVector<f64> {
        let n = old.outputs.ncols();
        match *self {
            Self::DiagGaussian { action_dim } => DVector::from_fn(n, |i, _| {
                (0..action_dim)
                    .map(|d| {
                        let (lo, ln) = (old.log_std[d], new.log_std[d]);
                        let diff = old.outputs[(d, i)] - new.outputs[(d, i)];
                        let inv_var_new = (-2.0 * ln).exp();
                        ln - lo + 0.5 * ((2.0 * lo).exp() + diff * diff) * inv_var_new - 0.5
                    })
                    .sum()
            }),
            Self::Categorical { .. } => DVector::from_fn(n, |i, _| {
                let old_logits = old.outputs.column(i);
                let new_logits = new.outputs.column(i);
                let p_old = softmax(old_logits.iter());
                let (lse_old, lse_new) = (
                    log_sum_exp(old_logits.iter()),
                    log_sum_exp(new_logits.iter()),
                );
                p_old
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p > 0.0)
                    .map(|(k, p)| p * ((old_logits[k] - lse_old) - (new_logits[k] - lse_new)))
                    .sum::<f64>()
                    .max(0.0)
            }),
        }
    }

    /// Σᵢ wᵢ ∂log π(aᵢ|sᵢ)/∂(distribution parameters).
    pub fn log_prob_gradient(
        &self,
        dist: DistributionBatch<'_>,
        actions: &DMatrix<f64>,
        weights: &[f64],
    ) -> HeadGradient {
        let n = dist.outputs.ncols();
        match *self {
            Self::DiagGaussian { action_dim } => {
                let mut outputs = DMatrix::zeros(action_dim, n);
                let mut log_std = DVector::zeros(action_dim);
                for d in 0..action_dim {
                    let inv_var = (-2.0 * dist.log_std[d]).exp();
                    for i in 0..n {
                        let diff = actions[(d, i)] - dist.outputs[(d, i)];
                        outputs[(d, i)] = weights[i] * diff * inv_var;
                        log_std[d] += weights[i] * (diff * diff * inv_var - 1.0);
                    }
                }
                HeadGradient { outputs, log_std }
            }
            Self::Categorical { n_actions } => {
                let mut outputs = DMatrix::zeros(n_actions, n);
                for i in 0..n {
                    let p = softmax(dist.outputs.column(i).iter());
                    let a = action_index(actions[(0, i)], n_actions);
                    for k in 0..n_actions {
                        let onehot = if k == a { 1.0 } else { 0.0 };
                        outputs[(k, i)] = weights[i] * (onehot - p[k]);
                    }
                }
                HeadGradient {
                    outputs,
                    log_std: DVector::zeros(0),
                }
            }
        }
    }

    /// Σᵢ wᵢ ∂KL(oldᵢ ‖ newᵢ)/∂(new distribution parameters): the reference the Fisher is
    /// checked against (the update itself never needs it).
    #[cfg(test)]
    pub fn kl_gradient(
        &self,
        old: DistributionBatch<'_>,
        new: DistributionBatch<'_>,
        weights: &[f64],
    ) -> HeadGradient {
        let n = old.outputs.ncols();
        match *self {
            Self::DiagGaussian { action_dim } => {
                let mut outputs = DMatrix::zeros(action_dim, n);
                let mut log_std = DVector::zeros(action_dim);
                for d in 0..action_dim {
                    let inv_var_new = (-2.0 * new.log_std[d]).exp();
                    let var_old = (2.0 * old.log_std[d]).exp();
                    for i in 0..n {
                        let diff = new.outputs[(d, i)] - old.outputs[(d, i)];
                        outputs[(d, i)] = weights[i] * diff * inv_var_new;
                        log_std[d] += weights[i] * (1.0 - (var_old + diff * diff) * inv_var_new);
                    }
                }
                HeadGradient { outputs, log_std }
            }
            Self::Categorical { n_actions } => {
                let mut outputs = DMatrix::zeros(n_actions, n);
                for i in 0..n {
                    let p_old = softmax(old.outputs.column(i).iter());
                    let p_new = softmax(new.outputs.column(i).iter());
                    for k in 0..n_actions {
                        outputs[(k, i)] = weights[i] * (p_new[k] - p_old[k]);
                    }
                }
                HeadGradient {
                    outputs,
                    log_std: DVector::zeros(0),
                }
            }
        }
    }

    /// Applies the per-sample Fisher `Mᵢ` of the distribution in its output parameters to a
    /// tangent of the outputs, in place: Gaussian `Mᵢ = diag(1/σ²)`, categorical
    /// `Mᵢ = diag(pᵢ) − pᵢpᵢᵀ`. `tangent` is `mlp_output_dim × N`, column-major.
    pub fn apply_output_fisher(&self, dist: DistributionBatch<'_>, tangent: &mut [f64]) {
        let rows = dist.outputs.nrows().max(1);
        match *self {
            Self::DiagGaussian { action_dim } => {
                let inv_var: Vec<f64> = dist.log_std[..action_dim]
                    .iter()
                    .map(|log_std| (-2.0 * log_std).exp())
                    .collect();
                for column in tangent.chunks_exact_mut(rows) {
                    for (u, scale) in column.iter_mut().zip(&inv_var) {
                        *u *= scale;
                    }
                }
            }
            Self::Categorical { .. } => {
                for (i, column) in tangent.chunks_exact_mut(rows).enumerate() {
                    let p = softmax(dist.outputs.column(i).iter());
                    let p_dot_u: f64 = p.iter().zip(column.iter()).map(|(p, u)| p * u).sum();
                    for (u, pk) in column.iter_mut().zip(&p) {
                        *u = pk * (*u - p_dot_u);
                    }
                }
            }
        }
    }
}

/// The categorical action stored as f64 (validated upstream to be an integer index).
fn action_index(action: f64, n_actions: usize) -> usize {
    (action.max(0.0) as usize).min(n_actions.saturating_sub(1))
}

/// log Σ exp(x), shifted by the maximum so no exp overflows.
fn log_sum_exp<'a>(values: impl Iterator<Item = &'a f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Softmax, shifted by the maximum so no exp overflows.
fn softmax<'a>(values: impl Iterator<Item = &'a f64> + Clone) -> Vec<f64> {
    let max = values.clone().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
    let exps: Vec<f64> = values.map(|v| (v - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use proptest::prelude::*;

    fn gaussian_1d(mean: f64, log_std: f64) -> (DMatrix<f64>, Vec<f64>) {
        (DMatrix::from_element(1, 1, mean), vec![log_std])
    }

    #[test]
    fn gaussian_log_prob_entropy_kl_match_closed_forms() {
        let head = ActionDistribution::DiagGaussian { action_dim: 1 };
        let (m, s) = gaussian_1d(0.3, 0.2_f64.ln());
        let dist = DistributionBatch {
            outputs: &m,
            log_std: &s,
        };
        let a = DMatrix::from_element(1, 1, 0.5);
        // N(0.5; 0.3, 0.2²) density = exp(−½)/(0.2·√(2π)).
        let expected = (-0.5f64).exp() / (0.2 * (2.0 * std::f64::consts::PI).sqrt());
        assert_abs_diff_eq!(head.log_prob(dist, &a)[0], expected.ln(), epsilon = 1e-12);
        let entropy = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * 0.04).ln();
        assert_abs_diff_eq!(head.entropy(dist)[0], entropy, epsilon = 1e-12);
        let (m2, s2) = gaussian_1d(-0.1, 0.5_f64.ln());
        let new = DistributionBatch {
            outputs: &m2,
            log_std: &s2,
        };
        // KL(N(μ₁,σ₁²) ‖ N(μ₂,σ₂²)) = ln(σ₂/σ₁) + (σ₁² + (μ₁−μ₂)²)/(2σ₂²) − ½.
        let kl = (0.5f64 / 0.2).ln() + (0.04 + 0.16) / (2.0 * 0.25) - 0.5;
        assert_abs_diff_eq!(head.kl(dist, new)[0], kl, epsilon = 1e-12);
        assert_abs_diff_eq!(head.kl(dist, dist)[0], 0.0, epsilon = 1e-15);
    }

    #[test]
    fn categorical_log_prob_entropy_kl_match_closed_forms() {
        let head = ActionDistribution::Categorical { n_actions: 3 };
        let p = [0.2, 0.3, 0.5];
        let q = [0.6, 0.3, 0.1];
        // Logits up to a constant shift, which softmax must ignore.
        let old = DMatrix::from_iterator(3, 1, p.iter().map(|v: &f64| v.ln() + 4.0));
        let new = DMatrix::from_iterator(3, 1, q.iter().map(|v: &f64| v.ln() - 2.0));
        let d_old = DistributionBatch {
            outputs: &old,
            log_std: &[],
        };
        let d_new = DistributionBatch {
            outputs: &new,
            log_std: &[],
        };
        let a = DMatrix::from_element(1, 1, 2.0);
        assert_abs_diff_eq!(head.log_prob(d_old, &a)[0], 0.5f64.ln(), epsilon = 1e-12);
        let entropy: f64 = -p.iter().map(|v| v * v.ln()).sum::<f64>();
        assert_abs_diff_eq!(head.entropy(d_old)[0], entropy, epsilon = 1e-12);
        let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert_abs_diff_eq!(head.kl(d_old, d_new)[0], kl, epsilon = 1e-12);
        assert_abs_diff_eq!(head.kl(d_old, d_old)[0], 0.0, epsilon = 1e-15);
    }

    #[test]
    fn categorical_is_stable_for_huge_logits() {
        let head = ActionDistribution::Categorical { n_actions: 2 };
        let logits = DMatrix::from_column_slice(2, 1, &[1000.0, -1000.0]);
        let d = DistributionBatch {
            outputs: &logits,
            log_std: &[],
        };
        let a = DMatrix::from_element(1, 1, 1.0);
        assert_abs_diff_eq!(head.log_prob(d, &a)[0], -2000.0, epsilon = 1e-9);
        assert!(head.entropy(d)[0].is_finite());
    }

    proptest! {
        /// The output Fisher is the Hessian of KL(old ‖ new) in the new outputs at new = old:
        /// compare M·u with a central difference of the KL gradient along u.
        #[test]
        fn output_fisher_is_the_kl_hessian(
            logits in proptest::collection::vec(-3.0f64..3.0, 4),
            direction in proptest::collection::vec(-1.0f64..1.0, 4),
            log_std in proptest::collection::vec(-1.0f64..0.5, 4),
        ) {
            for head in [ActionDistribution::Categorical { n_actions: 4 }, ActionDistribution::DiagGaussian { action_dim: 4 }] {
                let ls: &[f64] = if head.own_parameter_count() > 0 { &log_std } else { &[] };
                let old = DMatrix::from_column_slice(4, 1, &logits);
                let u = DMatrix::from_column_slice(4, 1, &direction);
                let eps = 1e-5;
                let plus = &old + &u * eps;
                let minus = &old - &u * eps;
                let d_old = DistributionBatch { outputs: &old, log_std: ls };
                let g_plus = head.kl_gradient(d_old, DistributionBatch { outputs: &plus, log_std: ls }, &[1.0]);
                let g_minus = head.kl_gradient(d_old, DistributionBatch { outputs: &minus, log_std: ls }, &[1.0]);
                let numeric = (g_plus.outputs - g_minus.outputs) / (2.0 * eps);
                let mut analytic = u.clone();
                head.apply_output_fisher(d_old, analytic.as_mut_slice());
                for (a, b) in analytic.iter().zip(numeric.iter()) {
                    prop_assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
                }
            }
        }
    }
}
