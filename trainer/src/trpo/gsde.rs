//! The gSDE head in the learner: a diagonal Gaussian whose standard deviation depends on the
//! state through the policy's last hidden features (Raffin et al. 2021, with
//! Stable-Baselines3's semantics; the device side is `tether_shared::policy::sde`).
//!
//! For a sample with features `z` (the output layer's input) and the head's parameters
//! `L[i][c]` (`features × columns`, one column per action with `full_std`, else one shared
//! column), `σ_ic = std(L_ic)` (`exp`, or `expln`) and
//!
//! ```text
//! var_j(s) = Σ_i z_i(s)² σ_{i,c(j)}² + ε,   log σ_j(s) = ½ ln var_j(s),   a_j ~ N(μ_j(s), var_j(s))
//! ```
//!
//! As SB3 with `learn_features = False`, the features are constants in the variance: the
//! hidden weights reach the distribution only through the mean, the head's parameters only
//! through `log σ`. So the distribution's parameters per sample are `(μ, log σ)`, and this
//! module supplies what the diagonal-Gaussian formulas need on top of the state-independent
//! head: the per-sample `log σ` ([`SdeDistribution::log_std_per_sample`]), the chain rule
//! from `∂/∂log σ_j(s)` to `∂/∂L` ([`SdeDistribution::own_gradient`]), and the head
//! parameters' block of the Fisher ([`SdeDistribution::own_fisher_product`]): with
//! `w_ij(s) = ∂log σ_j/∂L_{i,c(j)} = z_i² σ σ' / var_j` (σ' = dσ/dL), the Fisher of a
//! Gaussian in `log σ` is 2, so the block is `(1/N) Σ_s J(s)ᵀ 2 J(s)`. The mean block is the
//! state-independent head's `diag(1/σ²)`, with each sample's own σ; the two blocks do not
//! mix (a Gaussian's Fisher has no mean–spread cross term).
//!
//! Per-sample `log σ` values live column-major in an `action_dim × N` slice: sample `s`,
//! action `j` at `j + s · action_dim`.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use tether_shared::{ActionSpace, PlantDescription};

use super::distribution::{ActionDistribution, DistributionBatch, HeadGradient};
use super::hyperparams::TrpoConfig;

/// SB3's `epsilon`, added to every action variance (the device adds the f32 value).
const EPSILON: f64 = 1e-6;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A gSDE head's shape and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdeDistribution {
    /// Number of action dimensions.
    pub action_dim: usize,
    /// Width of the features the noise is drawn from (the last hidden layer).
    pub features: usize,
    /// One log-std per feature and action (true) or one per feature.
    pub full_std: bool,
    /// σ = `expln(L)` instead of `exp(L)`.
    pub use_expln: bool,
}

impl SdeDistribution {
    /// Columns of the log-std matrix.
    pub fn columns(&self) -> usize {
        if self.full_std { self.action_dim } else { 1 }
    }

    /// The head's own parameters: the `features × columns` log-std matrix, row-major.
    pub fn parameter_count(&self) -> usize {
        self.features * self.columns()
    }

    /// Column of the log-std matrix that action `j` uses.
    fn column(&self, j: usize) -> usize {
        if self.full_std { j } else { 0 }
    }

    /// σ = std(L) and its slope dσ/dL: `exp`, or SB3's `expln` (`exp` at or below 0,
    /// `ln(1 + L + 10⁻⁶) + 1` above).
    fn std_and_slope(&self, log_std: f64) -> (f64, f64) {
        if self.use_expln && log_std > 0.0 {
            let shifted = 1.0 + log_std + EPSILON;
            (shifted.ln() + 1.0, 1.0 / shifted)
        } else {
            let s = log_std.exp();
            (s, s)
        }
    }

    /// `σ_ic · dσ_ic/dL_ic` for every entry of the log-std matrix (row-major): the factor
    /// that turns `∂var/∂(σ²)` into `½ ∂var/∂L`.
    fn std_times_slope(&self, own: &[f64]) -> Vec<f64> {
        own.iter()
            .map(|&l| {
                let (s, ds) = self.std_and_slope(l);
                s * ds
            })
            .collect()
    }

    /// `log σ_j(s)` of every sample (`action_dim × N`, column-major) from the head's
    /// parameters `own` and the features (`features × N`).
    pub fn log_std_per_sample(&self, own: &[f64], features: &DMatrix<f64>) -> Vec<f64> {
        let (actions, columns) = (self.action_dim, self.columns());
        let variance_weights: Vec<f64> = own
            .iter()
            .map(|&l| self.std_and_slope(l).0.powi(2))
            .collect();
        let rows = features.nrows();
        let mut out = vec![0.5 * EPSILON.ln(); actions * features.ncols()];
        if rows == 0 {
            return out;
        }
        // Eight samples at a time: each sample's variance is still one sum over its
        // features in order (the value a sample-by-sample loop gives, bit for bit), but
        // eight independent sums keep the floating-point adder busy instead of waiting on
        // every addition; this ran for every sample of every pass over a batch.
        const SAMPLES: usize = 8;
        let blocks = features.as_slice().chunks(rows * SAMPLES);
        for (block, log_std) in blocks.zip(out.chunks_mut(actions * SAMPLES)) {
            let width = block.len() / rows;
            for j in 0..actions {
                let c = self.column(j);
                let mut sums = [-0.0f64; SAMPLES];
                for i in 0..rows {
                    let weight = variance_weights[i * columns + c];
                    for (l, sum) in sums.iter_mut().enumerate().take(width) {
                        let zi = block[l * rows + i];
                        *sum += zi * zi * weight;
                    }
                }
                for (l, sum) in sums.iter().enumerate().take(width) {
                    log_std[l * actions + j] = 0.5 * (sum + EPSILON).ln();
                }
            }
        }
        out
    }

    /// `J(s) v` for one sample: `Σ_i w_ij(s) v_{i,c(j)}` per action, given the sample's
    /// features, its `log σ` and `σ σ'` of the matrix.
    fn jacobian_times(&self, z: &[f64], log_std: &[f64], std_slope: &[f64], v: &[f64]) -> Vec<f64> {
        let columns = self.columns();
        (0..self.action_dim)
            .map(|j| {
                let c = self.column(j);
                let inv_var = (-2.0 * log_std[j]).exp();
                z.iter()
                    .enumerate()
                    .map(|(i, zi)| zi * zi * std_slope[i * columns + c] * v[i * columns + c])
                    .sum::<f64>()
                    * inv_var
            })
            .collect()
    }

    /// Adds `J(s)ᵀ u` for one sample to `out` (the log-std matrix's shape).
    fn add_jacobian_transpose(
        &self,
        z: &[f64],
        log_std: &[f64],
        std_slope: &[f64],
        u: &[f64],
        out: &mut [f64],
    ) {
        let columns = self.columns();
        for (j, &uj) in u.iter().enumerate() {
            let c = self.column(j);
            let scale = uj * (-2.0 * log_std[j]).exp();
            if columns == 1 {
                // One column (one action, or σ shared by all): contiguous, so the loop
                // vectorises; the same operations as below.
                for ((o, zi), slope) in out.iter_mut().zip(z).zip(std_slope) {
                    *o += scale * zi * zi * slope;
                }
                continue;
            }
            for (i, zi) in z.iter().enumerate() {
                let k = i * columns + c;
                out[k] += scale * zi * zi * std_slope[k];
            }
        }
    }

    /// The gradient with respect to the head's parameters from `g`, the gradient with
    /// respect to every sample's `log σ` (`action_dim × N`, column-major, already weighted):
    /// `Σ_s J(s)ᵀ g(s)`. `log_std` are the samples' `log σ`, `features` their features.
    pub fn own_gradient(
        &self,
        own: &[f64],
        features: &DMatrix<f64>,
        log_std: &[f64],
        g: &[f64],
    ) -> DVector<f64> {
        let std_slope = self.std_times_slope(own);
        let mut out = vec![0.0; own.len()];
        let actions = self.action_dim;
        for ((z, ls), gs) in features
            .column_iter()
            .zip(log_std.chunks_exact(actions))
            .zip(g.chunks_exact(actions))
        {
            self.add_jacobian_transpose(z.as_slice(), ls, &std_slope, gs, &mut out);
        }
        DVector::from_vec(out)
    }

    /// `Σ_s J(s)ᵀ 2 J(s) v` over the samples (not divided by their number): the head
    /// parameters' block of the Fisher applied to `v` (the log-std matrix's shape).
    pub fn own_fisher_product(
        &self,
        own: &[f64],
        features: &DMatrix<f64>,
        log_std: &[f64],
        v: &[f64],
    ) -> Vec<f64> {
        let std_slope = self.std_times_slope(own);
        let mut out = vec![0.0; own.len()];
        for (z, ls) in features
            .column_iter()
            .zip(log_std.chunks_exact(self.action_dim))
        {
            let z = z.as_slice();
            let u: Vec<f64> = self
                .jacobian_times(z, ls, &std_slope, v)
                .into_iter()
                .map(|x| 2.0 * x)
                .collect();
            self.add_jacobian_transpose(z, ls, &std_slope, &u, &mut out);
        }
        out
    }
}

/// Why a run cannot explore with gSDE.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "`use_sde = true` needs a continuous action space, but plant `{plant}` chooses among {choices} discrete actions: gSDE perturbs a Gaussian's mean; set `use_sde = false` for this plant"
)]
pub struct SdeOnDiscreteActions {
    /// The plant's name.
    pub plant: String,
    /// Its number of choices.
    pub choices: u8,
}

/// The action distribution a run on `plant` trains with `config`: gSDE over the last hidden
/// layer when `use_sde` is set (continuous plants only), else the plant's own head.
pub fn run_distribution(
    plant: &PlantDescription,
    config: &TrpoConfig,
) -> Result<ActionDistribution, SdeOnDiscreteActions> {
    if !config.use_sde {
        return Ok(ActionDistribution::of_plant(plant));
    }
    match &plant.action {
        ActionSpace::Continuous { low, .. } => {
            Ok(ActionDistribution::StateDependent(SdeDistribution {
                action_dim: low.len(),
                features: config
                    .policy_hidden
                    .last()
                    .copied()
                    .unwrap_or(usize::from(plant.obs_dim)),
                full_std: config.full_std,
                use_expln: config.use_expln,
            }))
        }
        ActionSpace::Discrete { n } => Err(SdeOnDiscreteActions {
            plant: plant.name.to_string(),
            choices: *n,
        }),
    }
}

// ----- the diagonal Gaussian with a log σ per sample ---------------------------------------

/// `log σ` of sample `i`, action `d`.
fn spread(dist: &DistributionBatch<'_>, action_dim: usize, d: usize, i: usize) -> f64 {
    dist.log_std[d + i * action_dim]
}

/// log π(a | s) per sample.
pub fn log_prob(
    dist: DistributionBatch<'_>,
    action_dim: usize,
    actions: &DMatrix<f64>,
) -> DVector<f64> {
    DVector::from_fn(dist.outputs.ncols(), |i, _| {
        (0..action_dim)
            .map(|d| {
                let ls = spread(&dist, action_dim, d, i);
                let z = (actions[(d, i)] - dist.outputs[(d, i)]) * (-ls).exp();
                -0.5 * z * z - ls - 0.5 * LN_2PI
            })
            .sum()
    })
}

/// Entropy per sample, nats.
pub fn entropy(dist: DistributionBatch<'_>, action_dim: usize) -> DVector<f64> {
    DVector::from_fn(dist.outputs.ncols(), |i, _| {
        (0..action_dim)
            .map(|d| spread(&dist, action_dim, d, i) + 0.5 * (1.0 + LN_2PI))
            .sum()
    })
}

/// KL(old ‖ new) per sample, nats.
pub fn kl(
    old: DistributionBatch<'_>,
    new: DistributionBatch<'_>,
    action_dim: usize,
) -> DVector<f64> {
    DVector::from_fn(old.outputs.ncols(), |i, _| {
        (0..action_dim)
            .map(|d| {
                let (lo, ln) = (
                    spread(&old, action_dim, d, i),
                    spread(&new, action_dim, d, i),
                );
                let diff = old.outputs[(d, i)] - new.outputs[(d, i)];
                ln - lo + 0.5 * ((2.0 * lo).exp() + diff * diff) * (-2.0 * ln).exp() - 0.5
            })
            .sum()
    })
}

/// Σᵢ wᵢ ∂log π(aᵢ|sᵢ)/∂(μ, log σ): the mean part per sample, and the `log σ` part per
/// sample (`action_dim × N`) for [`SdeDistribution::own_gradient`] to chain.
pub fn log_prob_gradient(
    dist: DistributionBatch<'_>,
    action_dim: usize,
    actions: &DMatrix<f64>,
    weights: &[f64],
) -> HeadGradient {
    let n = dist.outputs.ncols();
    let mut outputs = DMatrix::zeros(action_dim, n);
    let mut log_std = DVector::zeros(action_dim * n);
    for i in 0..n {
        for d in 0..action_dim {
            let inv_var = (-2.0 * spread(&dist, action_dim, d, i)).exp();
            let diff = actions[(d, i)] - dist.outputs[(d, i)];
            outputs[(d, i)] = weights[i] * diff * inv_var;
            log_std[d + i * action_dim] = weights[i] * (diff * diff * inv_var - 1.0);
        }
    }
    HeadGradient { outputs, log_std }
}

/// Σᵢ wᵢ ∂KL(oldᵢ ‖ newᵢ)/∂(new μ, new log σ), shaped as [`log_prob_gradient`].
#[cfg(test)]
pub fn kl_gradient(
    old: DistributionBatch<'_>,
    new: DistributionBatch<'_>,
    action_dim: usize,
    weights: &[f64],
) -> HeadGradient {
    let n = old.outputs.ncols();
    let mut outputs = DMatrix::zeros(action_dim, n);
    let mut log_std = DVector::zeros(action_dim * n);
    for i in 0..n {
        for d in 0..action_dim {
            let inv_var_new = (-2.0 * spread(&new, action_dim, d, i)).exp();
            let var_old = (2.0 * spread(&old, action_dim, d, i)).exp();
            let diff = new.outputs[(d, i)] - old.outputs[(d, i)];
            outputs[(d, i)] = weights[i] * diff * inv_var_new;
            log_std[d + i * action_dim] =
                weights[i] * (1.0 - (var_old + diff * diff) * inv_var_new);
        }
    }
    HeadGradient { outputs, log_std }
}

/// Applies each sample's `diag(1/σ_j(s)²)` to a tangent of the means (`action_dim × N`,
/// column-major), in place.
pub fn apply_output_fisher(dist: DistributionBatch<'_>, action_dim: usize, tangent: &mut [f64]) {
    for (i, column) in tangent.chunks_exact_mut(action_dim.max(1)).enumerate() {
        for (d, u) in column.iter_mut().enumerate() {
            *u *= (-2.0 * spread(&dist, action_dim, d, i)).exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    const HEADS: [SdeDistribution; 4] = [
        SdeDistribution {
            action_dim: 2,
            features: 3,
            full_std: true,
            use_expln: false,
        },
        SdeDistribution {
            action_dim: 2,
            features: 3,
            full_std: false,
            use_expln: false,
        },
        SdeDistribution {
            action_dim: 2,
            features: 3,
            full_std: true,
            use_expln: true,
        },
        SdeDistribution {
            action_dim: 1,
            features: 3,
            full_std: false,
            use_expln: true,
        },
    ];

    fn features() -> DMatrix<f64> {
        DMatrix::from_column_slice(3, 2, &[0.5, -0.9, 0.2, 0.1, 0.7, -0.4])
    }

    fn own(head: &SdeDistribution) -> Vec<f64> {
        // Both signs, so expln's two branches are used.
        (0..head.parameter_count())
            .map(|k| 0.4 * (k as f64) - 0.7)
            .collect()
    }

    #[test]
    fn a_run_picks_gsde_only_when_configured_and_never_for_discrete_actions() {
        let continuous = PlantDescription {
            name: heapless::String::try_from("pendulum").unwrap(),
            obs_dim: 3,
            action: ActionSpace::Continuous {
                low: heapless::Vec::from_slice(&[-2.0]).unwrap(),
                high: heapless::Vec::from_slice(&[2.0]).unwrap(),
            },
            control_rate_hz: 20.0,
            episode_steps: 200,
        };
        let discrete = PlantDescription {
            name: heapless::String::try_from("cartpole").unwrap(),
            action: ActionSpace::Discrete { n: 2 },
            ..continuous.clone()
        };
        let plain = TrpoConfig::default();
        assert_eq!(
            run_distribution(&continuous, &plain),
            Ok(ActionDistribution::DiagGaussian { action_dim: 1 })
        );
        let sde = TrpoConfig {
            use_sde: true,
            full_std: false,
            policy_hidden: vec![64, 32],
            ..TrpoConfig::default()
        };
        assert_eq!(
            run_distribution(&continuous, &sde),
            Ok(ActionDistribution::StateDependent(SdeDistribution {
                action_dim: 1,
                features: 32,
                full_std: false,
                use_expln: false,
            }))
        );
        let err = run_distribution(&discrete, &sde).expect_err("discrete");
        assert_eq!(
            err.to_string(),
            "`use_sde = true` needs a continuous action space, but plant `cartpole` chooses among 2 discrete actions: gSDE perturbs a Gaussian's mean; set `use_sde = false` for this plant"
        );
        assert!(run_distribution(&discrete, &plain).is_ok());
    }

    #[test]
    fn log_std_per_sample_matches_the_variance_sum() {
        let head = HEADS[0];
        let z = features();
        let l = own(&head);
        let per_sample = head.log_std_per_sample(&l, &z);
        for s in 0..2 {
            for j in 0..2 {
                let var: f64 = (0..3)
                    .map(|i| z[(i, s)].powi(2) * (2.0 * l[i * 2 + j]).exp())
                    .sum::<f64>()
                    + 1e-6;
                assert_abs_diff_eq!(per_sample[j + 2 * s], 0.5 * var.ln(), epsilon = 1e-14);
            }
        }
        let shared = HEADS[1];
        let ls = shared.log_std_per_sample(&own(&shared), &z);
        assert_eq!(ls[0], ls[1], "one column: both actions get the same σ");
    }

    /// `own_gradient` is the transpose of `J`: for the objective Σ_s gᵀ log σ(s), its
    /// central differences in L match.
    /// The blocked sums are the one-sample-at-a-time sums bit for bit, across a partial
    /// last block of samples, for every head (one and two columns, exp and expln).
    #[test]
    fn log_std_per_sample_in_blocks_is_the_per_sample_sum_bit_for_bit() {
        let samples = 19;
        let z = DMatrix::from_fn(3, samples, |i, s| {
            ((i * 7 + s * 13) % 17) as f64 / 7.0 - 1.1
        });
        for head in HEADS {
            let l = own(&head);
            let blocked = head.log_std_per_sample(&l, &z);
            let weights: Vec<f64> = l.iter().map(|&v| head.std_and_slope(v).0.powi(2)).collect();
            for s in 0..samples {
                for j in 0..head.action_dim {
                    let variance: f64 = (0..3)
                        .map(|i| {
                            z[(i, s)] * z[(i, s)] * weights[i * head.columns() + head.column(j)]
                        })
                        .sum::<f64>()
                        + EPSILON;
                    let expected = 0.5 * variance.ln();
                    let actual = blocked[s * head.action_dim + j];
                    assert_eq!(
                        actual.to_bits(),
                        expected.to_bits(),
                        "sample {s}, action {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn own_gradient_matches_central_differences() {
        for head in HEADS {
            let z = features();
            let l = own(&head);
            let g: Vec<f64> = (0..head.action_dim * 2)
                .map(|k| 0.3 - 0.2 * k as f64)
                .collect();
            let objective = |l: &[f64]| -> f64 {
                head.log_std_per_sample(l, &z)
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let analytic = head.own_gradient(&l, &z, &head.log_std_per_sample(&l, &z), &g);
            let eps = 1e-6;
            for k in 0..l.len() {
                let mut plus = l.clone();
                let mut minus = l.clone();
                plus[k] += eps;
                minus[k] -= eps;
                let numeric = (objective(&plus) - objective(&minus)) / (2.0 * eps);
                assert_abs_diff_eq!(analytic[k], numeric, epsilon = 1e-8);
            }
        }
    }

    /// The own block of the Fisher is `Σ Jᵀ 2 J`: symmetric and positive semi-definite,
    /// and `vᵀ F v = 2 Σ_s |J(s) v|²`.
    #[test]
    fn own_fisher_product_is_jt_2_j() {
        for head in HEADS {
            let z = features();
            let l = own(&head);
            let ls = head.log_std_per_sample(&l, &z);
            let n = l.len();
            let u: Vec<f64> = (0..n).map(|k| (k as f64 * 0.7).sin()).collect();
            let v: Vec<f64> = (0..n).map(|k| (k as f64 * 1.3).cos()).collect();
            let fu = head.own_fisher_product(&l, &z, &ls, &u);
            let fv = head.own_fisher_product(&l, &z, &ls, &v);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            assert_abs_diff_eq!(dot(&u, &fv), dot(&v, &fu), epsilon = 1e-12);
            let std_slope = head.std_times_slope(&l);
            let quadratic: f64 = z
                .column_iter()
                .zip(ls.chunks_exact(head.action_dim))
                .map(|(zs, lss)| {
                    let jv = head.jacobian_times(zs.as_slice(), lss, &std_slope, &v);
                    2.0 * jv.iter().map(|x| x * x).sum::<f64>()
                })
                .sum();
            assert_abs_diff_eq!(dot(&v, &fv), quadratic, epsilon = 1e-12);
            assert!(dot(&v, &fv) >= 0.0);
        }
    }
}
