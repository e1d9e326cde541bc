//! Running observation normaliser: per-dimension mean and variance by Welford's algorithm,
//! batches folded in and workers' statistics merged by the parallel formula of Chan et al.
//! The learner decides when to `update` it, so it stays frozen while a batch is used for an
//! update; its statistics are exported with the policy so the device normalises alike.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::learner_state::{NormalizerState, StateError, check_vector};

/// Added to the variance before the square root (same as the device).
pub const VARIANCE_EPSILON: f64 = 1e-8;
/// Normalised observations are clamped to ±this.
pub const CLIP: f64 = 10.0;

/// Running per-dimension mean and variance of observations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationNormalizer {
    count: f64,
    mean: DVector<f64>,
    /// Sum of squared deviations from the mean (Welford's M2).
    m2: DVector<f64>,
}

impl ObservationNormalizer {
    /// No data yet: mean 0, variance 1 (identity normalisation).
    pub fn new(obs_dim: usize) -> Self {
        Self {
            count: 0.0,
            mean: DVector::zeros(obs_dim),
            m2: DVector::zeros(obs_dim),
        }
    }

    /// The statistics as plain data for a checkpoint.
    pub fn state(&self) -> NormalizerState {
        NormalizerState {
            count: self.count,
            mean: self.mean.as_slice().to_vec(),
            m2: self.m2.as_slice().to_vec(),
        }
    }

    /// A normaliser for `obs_dim` values from checkpointed statistics, after checking
    /// lengths, finiteness, `count ≥ 0` and `m2 ≥ 0`.
    pub fn from_state(obs_dim: usize, state: &NormalizerState) -> Result<Self, StateError> {
        check_vector(
            "normaliser count",
            &[state.count],
            1,
            |c| c >= 0.0,
            "finite and ≥ 0",
        )?;
        check_vector("normaliser mean", &state.mean, obs_dim, |_| true, "finite")?;
        check_vector(
            "normaliser m2",
            &state.m2,
            obs_dim,
            |v| v >= 0.0,
            "finite and ≥ 0",
        )?;
        Ok(Self {
            count: state.count,
            mean: DVector::from_column_slice(&state.mean),
            m2: DVector::from_column_slice(&state.m2),
        })
    }

    /// Observations folded in so far.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Running mean per dimension.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// Population variance per dimension (1 before any data).
    pub fn variance(&self) -> DVector<f64> {
        if self.count > 0.0 {
            &self.m2 / self.count
        } else {
            DVector::from_element(self.mean.len(), 1.0)
        }
    }

    /// `1 / sqrt(var + 1e-8)` per dimension, as exported to the device.
    pub fn scale(&self) -> DVector<f64> {
        self.variance()
            .map(|v| 1.0 / (v.max(0.0) + VARIANCE_EPSILON).sqrt())
    }

    /// Folds in a batch of observations (`obs_dim × N`). Non-finite columns are skipped so
    /// one bad sample cannot poison the statistics.
    pub fn update(&mut self, observations: &DMatrix<f64>) {
        let finite: Vec<usize> = (0..observations.ncols())
            .filter(|&j| observations.column(j).iter().all(|v| v.is_finite()))
            .collect();
        if finite.is_empty() {
            return;
        }
        let batch = observations.select_columns(finite.iter());
        let n = batch.ncols() as f64;
        let mean = batch.column_mean();
        let m2 = DVector::from_fn(batch.nrows(), |i, _| {
            batch.row(i).iter().map(|x| (x - mean[i]).powi(2)).sum()
        });
        self.merge(&Self { count: n, mean, m2 });
    }

    /// Combines another worker's statistics into these (Chan et al. parallel variance).
    pub fn merge(&mut self, other: &Self) {
        if other.count <= 0.0 || other.mean.len() != self.mean.len() {
            return;
        }
        let total = self.count + other.count;
        let delta = &other.mean - &self.mean;
        let weight = self.count * other.count / total;
        self.mean += &delta * (other.count / total);
        self.m2 += &other.m2 + delta.component_mul(&delta) * weight;
        self.count = total;
    }

    /// `clamp((x − mean) · scale, ±10)` for every column of `observations`.
    pub fn normalize(&self, observations: &DMatrix<f64>) -> DMatrix<f64> {
        let scale = self.scale();
        let mut out = observations.clone();
        for mut column in out.column_iter_mut() {
            for (i, x) in column.iter_mut().enumerate() {
                *x = ((*x - self.mean[i]) * scale[i]).clamp(-CLIP, CLIP);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merged_partial_statistics_equal_the_whole_batch(
            data in proptest::collection::vec(-100.0f64..100.0, 6..60),
            split in 1usize..5,
        ) {
            let n = data.len() / 2;
            let all = DMatrix::from_column_slice(2, n, &data[..2 * n]);
            let cut = (split * n / 5).max(1).min(n - 1);
            let mut whole = ObservationNormalizer::new(2);
            whole.update(&all);
            let mut a = ObservationNormalizer::new(2);
            let mut b = ObservationNormalizer::new(2);
            a.update(&all.columns(0, cut).into_owned());
            b.update(&all.columns(cut, n - cut).into_owned());
            a.merge(&b);
            for i in 0..2 {
                let row: Vec<f64> = all.row(i).iter().copied().collect();
                let mean = row.iter().sum::<f64>() / n as f64;
                let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
                prop_assert!((a.mean()[i] - mean).abs() < 1e-9);
                prop_assert!((a.variance()[i] - var).abs() < 1e-7 * (1.0 + var));
                prop_assert!((whole.variance()[i] - var).abs() < 1e-7 * (1.0 + var));
            }
        }
    }

    #[test]
    fn normalize_standardises_and_clamps() {
        let mut norm = ObservationNormalizer::new(1);
        norm.update(&DMatrix::from_row_slice(1, 4, &[1.0, 3.0, 1.0, 3.0]));
        let out = norm.normalize(&DMatrix::from_row_slice(1, 3, &[3.0, 2.0, 1e6]));
        assert_relative_eq!(
            out[(0, 0)],
            1.0 / (1.0 + 1e-8f64).sqrt(),
            max_relative = 1e-12
        );
        assert_eq!(out[(0, 1)], 0.0);
        assert_eq!(out[(0, 2)], CLIP);
    }

    #[test]
    fn fresh_normalizer_is_the_identity_and_ignores_non_finite_samples() {
        let mut norm = ObservationNormalizer::new(2);
        let x = DMatrix::from_row_slice(2, 1, &[0.5, -2.0]);
        assert_relative_eq!(norm.normalize(&x), x, max_relative = 1e-7);
        norm.update(&DMatrix::from_row_slice(2, 1, &[f64::NAN, 1.0]));
        assert_eq!(norm.count(), 0.0);
    }
}
