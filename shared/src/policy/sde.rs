//! Generalized state-dependent exploration (gSDE; Raffin, Kober and Stulp, "Smooth
//! Exploration for Robotic Reinforcement Learning", CoRL 2021), with the semantics of
//! Stable-Baselines3's `StateDependentNoiseDistribution`.
//!
//! The exploration noise of action `j` is `ε_j(s) = Σ_i z_i(s) · θ_ij`, where `z(s)` are the
//! policy's last hidden features (the input of the output layer) and the noise matrix
//! `θ_ij ~ N(0, σ_ij²)` is drawn now and then and held in between (every
//! [`SdeHead::resample_every`] steps), so consecutive actions move together with the state
//! instead of jumping independently every step. `σ_ij` is learned: the head's parameters
//! are `log_std[feature][column]` (one column per action with [`SdeHead::full_std`], else one
//! column shared by every action), mapped by [`sde_std`] (`exp`, or SB3's `expln`).
//!
//! For one step, with θ drawn independently of the state, the action is Gaussian:
//! `a_j ~ N(μ_j(s), Σ_i z_i(s)² σ_ij² + ε)` ([`sde_variance`], `ε` = [`SDE_EPSILON`] as SB3
//! adds, which keeps the density finite when the features vanish). That density is the
//! log-probability the device reports and the host checks
//! ([`super::gaussian_log_prob_with_variance`]). As in SB3 (`learn_features = False`), the
//! learner treats the features in the variance as constants.
//!
//! Every function here is the one definition of its arithmetic, in f32, for the device's
//! sampler and the host's cross-check alike.

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Added to every action variance (SB3's `epsilon`).
pub const SDE_EPSILON: f32 = 1e-6;

/// A gSDE Gaussian head: the network outputs the mean; the noise comes from the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SdeHead {
    /// Action dimension.
    pub action_dim: u8,
    /// One log-std per feature and action (`true`, SB3's default) or one per feature shared
    /// by every action (`false`).
    pub full_std: bool,
    /// σ = `expln(log_std)` (`exp` below 0, `ln(1 + x) + 1` above: grows slowly) instead
    /// of `exp(log_std)`.
    pub use_expln: bool,
    /// Control steps between two draws of the noise matrix, counted over the whole run
    /// (episode boundaries do not reset the count); 0 draws it once per run, that is once
    /// per collection round (SB3's `sde_sample_freq ≤ 0`). A policy swap redraws it too.
    pub resample_every: u16,
}

impl SdeHead {
    /// Columns of the log-std matrix: the action dimension with [`SdeHead::full_std`], else 1.
    pub fn log_std_columns(&self) -> usize {
        if self.full_std {
            self.action_dim as usize
        } else {
            1
        }
    }
}

/// σ from one learned log-std value: `exp(x)`, or with `use_expln` SB3's
/// `expln(x)` = `exp(x)` for `x ≤ 0` and `ln(1 + x + 10⁻⁶) + 1` above.
#[inline]
pub fn sde_std(log_std: f32, use_expln: bool) -> f32 {
    if use_expln && log_std > 0.0 {
        libm::log1pf(log_std + SDE_EPSILON) + 1.0
    } else {
        libm::expf(log_std)
    }
}

/// Expands the head's `log_std` parameters (`features × columns`, row-major) into the
/// `features × action_dim` matrix of σ (row-major: `std[i · action_dim + j]`) that
/// [`sde_variance`] reads and the noise matrix is drawn with. Returns false, leaving `std`
/// partly written, when a length does not fit or a σ is not finite and positive.
pub fn sde_std_matrix(head: &SdeHead, log_std: &[f32], std: &mut [f32]) -> bool {
    let (columns, actions) = (head.log_std_columns(), head.action_dim as usize);
    if columns == 0 || !log_std.len().is_multiple_of(columns) {
        return false;
    }
    let features = log_std.len() / columns;
    let Some(std) = std.get_mut(..features * actions) else {
        return false;
    };
    for (row, values) in std
        .chunks_exact_mut(actions)
        .zip(log_std.chunks_exact(columns))
    {
        for (j, s) in row.iter_mut().enumerate() {
            let value = if head.full_std {
                values.get(j)
            } else {
                values.first()
            };
            *s = sde_std(value.copied().unwrap_or(f32::NAN), head.use_expln);
        }
    }
    std.iter().all(|s| s.is_finite() && *s > 0.0)
}

/// The action variances `var_j = (Σ_i (z_i · σ_ij)²) + ε`, the products summed in feature
/// order, for `features` `z` and the `features × actions` matrix `std` (row-major). Writes
/// `variance.len()` values; `std` must hold `features.len() · variance.len()`.
#[inline]
pub fn sde_variance(features: &[f32], std: &[f32], variance: &mut [f32]) {
    let actions = variance.len();
    variance.fill(0.0);
    if actions == 0 {
        return;
    }
    for (&z, row) in features.iter().zip(std.chunks_exact(actions)) {
        for (v, &s) in variance.iter_mut().zip(row) {
            let t = z * s;
            *v += t * t;
        }
    }
    for v in variance.iter_mut() {
        *v += SDE_EPSILON;
    }
}

/// The exploration noise `ε_j = Σ_i z_i · θ_ij`, summed in feature order, for `features`
/// `z` and the `features × actions` noise matrix `theta` (row-major). Writes `noise.len()`
/// values.
#[inline]
pub fn sde_noise(features: &[f32], theta: &[f32], noise: &mut [f32]) {
    let actions = noise.len();
    noise.fill(0.0);
    if actions == 0 {
        return;
    }
    for (&z, row) in features.iter().zip(theta.chunks_exact(actions)) {
        for (e, &t) in noise.iter_mut().zip(row) {
            *e += z * t;
        }
    }
}

/// [`sde_noise`] and [`sde_variance`] in one pass over the features, bit for bit the same
/// values (each sum in feature order, no fused multiply-add): the device's exploring step.
/// One action, every plant model's case, runs as two dot products in one loop.
#[inline]
pub fn sde_noise_and_variance(
    features: &[f32],
    theta: &[f32],
    std: &[f32],
    noise: &mut [f32],
    variance: &mut [f32],
) {
    if let ([e], [v]) = (&mut *noise, &mut *variance) {
        let (mut e_sum, mut v_sum) = (0.0f32, 0.0f32);
        for ((&z, &t), &s) in features.iter().zip(theta).zip(std) {
            e_sum += z * t;
            let d = z * s;
            v_sum += d * d;
        }
        *e = e_sum;
        *v = v_sum + SDE_EPSILON;
        return;
    }
    sde_noise(features, theta, noise);
    sde_variance(features, std, variance);
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: SdeHead = SdeHead {
        action_dim: 2,
        full_std: true,
        use_expln: false,
        resample_every: 4,
    };

    #[test]
    fn expln_is_exp_below_zero_and_logarithmic_above() {
        for x in [-3.0f32, -0.5, 0.0] {
            assert_eq!(sde_std(x, true), libm::expf(x));
        }
        for x in [0.5f32, 2.0, 19.0] {
            let expected = libm::log1p(f64::from(x) + 1e-6) + 1.0;
            assert!((f64::from(sde_std(x, true)) - expected).abs() < 1e-6, "{x}");
            assert_eq!(sde_std(x, false), libm::expf(x));
        }
        // Continuous at 0 (to the epsilon) and slower than exp beyond.
        assert!((sde_std(1e-7, true) - 1.0).abs() < 2e-6);
        assert!(sde_std(5.0, true) < 3.0);
    }

    #[test]
    fn std_matrix_broadcasts_a_shared_column_and_checks_lengths() {
        let log_std = [0.0f32, -1.0, 0.5, 0.25];
        let mut std = [0.0f32; 4];
        assert!(sde_std_matrix(&HEAD, &log_std, &mut std));
        let expected = log_std.map(libm::expf);
        assert_eq!(std, expected);
        let shared = SdeHead {
            full_std: false,
            ..HEAD
        };
        // Two features, one column each: every action of a feature gets its σ.
        assert!(sde_std_matrix(&shared, &log_std[..2], &mut std));
        assert_eq!(std, [1.0, 1.0, libm::expf(-1.0), libm::expf(-1.0)]);
        assert!(!sde_std_matrix(&HEAD, &log_std[..3], &mut std), "ragged");
        assert!(!sde_std_matrix(&HEAD, &log_std, &mut std[..3]), "short");
        assert!(
            !sde_std_matrix(&HEAD, &[0.0, 200.0], &mut std),
            "σ overflows"
        );
        assert!(!sde_std_matrix(&HEAD, &[0.0, f32::NAN], &mut std), "NaN");
    }

    #[test]
    fn variance_and_noise_match_their_sums() {
        let z = [0.5f32, -1.0, 0.25];
        let std = [1.0f32, 2.0, 0.5, 0.1, 3.0, 1.0];
        let theta = [0.2f32, -0.4, 1.0, 0.3, -2.0, 0.5];
        let mut variance = [0.0f32; 2];
        let mut noise = [0.0f32; 2];
        sde_variance(&z, &std, &mut variance);
        sde_noise(&z, &theta, &mut noise);
        for j in 0..2 {
            let var: f64 = (0..3)
                .map(|i| (f64::from(z[i]) * f64::from(std[i * 2 + j])).powi(2))
                .sum::<f64>()
                + 1e-6;
            let eps: f64 = (0..3)
                .map(|i| f64::from(z[i]) * f64::from(theta[i * 2 + j]))
                .sum();
            assert!((f64::from(variance[j]) - var).abs() < 1e-6, "var {j}");
            assert!((f64::from(noise[j]) - eps).abs() < 1e-6, "noise {j}");
        }
        // Vanishing features leave only ε: the density stays finite.
        sde_variance(&[0.0; 3], &std, &mut variance);
        assert_eq!(variance, [SDE_EPSILON; 2]);
    }

    /// The one-pass form agrees bit for bit with the two sums, for one action and more.
    #[test]
    fn one_pass_noise_and_variance_equal_the_separate_sums() {
        for actions in [1usize, 2, 3] {
            let features: [f32; 13] = core::array::from_fn(|i| ((i * 7 % 11) as f32 - 5.0) * 0.173);
            let n = features.len() * actions;
            let theta: [f32; 39] = core::array::from_fn(|i| ((i * 5 % 9) as f32 - 4.0) * 0.31);
            let std: [f32; 39] = core::array::from_fn(|i| 0.2 + (i % 7) as f32 * 0.13);
            let (theta, std) = (&theta[..n], &std[..n]);
            let (mut e1, mut v1) = ([0.0f32; 3], [0.0f32; 3]);
            sde_noise(&features, theta, &mut e1[..actions]);
            sde_variance(&features, std, &mut v1[..actions]);
            let (mut e2, mut v2) = ([9.0f32; 3], [9.0f32; 3]);
            sde_noise_and_variance(
                &features,
                theta,
                std,
                &mut e2[..actions],
                &mut v2[..actions],
            );
            for j in 0..actions {
                assert_eq!(e1[j].to_bits(), e2[j].to_bits(), "noise {j} of {actions}");
                assert_eq!(
                    v1[j].to_bits(),
                    v2[j].to_bits(),
                    "variance {j} of {actions}"
                );
            }
        }
    }
}
