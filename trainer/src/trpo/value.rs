//! The value function V(s): its own tanh MLP (output gain 1), fitted to the GAE value
//! targets by Adam on shuffled minibatches for a few epochs per iteration (as SB3-contrib's
//! TRPO critic), mean-squared-error loss.

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand::seq::SliceRandom;

use super::learner_state::{AdamState, StateError, check_vector};
use super::mlp::{ForwardCache, Mlp, PassScratch};

/// Adam (Kingma & Ba 2015) with bias correction.
#[derive(Clone, Debug)]
struct Adam {
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    first_moment: DVector<f64>,
    second_moment: DVector<f64>,
    steps: u32,
}

impl Adam {
    fn new(parameters: usize, learning_rate: f64) -> Self {
        Self {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            first_moment: DVector::zeros(parameters),
            second_moment: DVector::zeros(parameters),
            steps: 0,
        }
    }

    /// θ ← θ − lr · m̂ / (sqrt(v̂) + ε).
    fn step(&mut self, params: &mut [f64], gradient: &[f64]) {
        self.steps = self.steps.saturating_add(1);
        // Beyond 2³¹ steps β^t is 0 in f64 anyway; the clamp only keeps `powi` in range.
        let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let (beta1, beta2) = (self.beta1, self.beta2);
        let (lr, epsilon) = (self.learning_rate, self.epsilon);
        let moments = self
            .first_moment
            .as_mut_slice()
            .iter_mut()
            .zip(self.second_moment.as_mut_slice());
        for ((p, &g), (m, v)) in params.iter_mut().zip(gradient).zip(moments) {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            let m_hat = *m / correction1;
            let v_hat = *v / correction2;
            *p -= lr * m_hat / (v_hat.sqrt() + epsilon);
        }
    }
}

/// What one fit did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueFitReport {
    /// Mean minibatch MSE over the last epoch (value units²).
    pub value_loss: f64,
    /// 1 − Var(targets − V_before)/Var(targets) with the predictions used for the
    /// advantages (before this fit); NaN when the targets have no variance.
    pub explained_variance: f64,
}

/// V(s) with its optimiser state.
#[derive(Clone, Debug)]
pub struct ValueFunction {
    mlp: Mlp,
    params: DVector<f64>,
    optimizer: Adam,
}

impl ValueFunction {
    /// Orthogonal init (gains √2 hidden, 1 output), Adam with `learning_rate`.
    pub fn new(obs_dim: usize, hidden: &[usize], learning_rate: f64, rng: &mut impl Rng) -> Self {
        let mlp = Mlp::new(obs_dim, hidden, 1);
        let params = mlp.initial_parameters(std::f64::consts::SQRT_2, 1.0, rng);
        let optimizer = Adam::new(params.len(), learning_rate);
        Self {
            mlp,
            params,
            optimizer,
        }
    }

    /// The network architecture.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// Flat parameters (same layout as the policy MLP).
    pub fn parameters(&self) -> &DVector<f64> {
        &self.params
    }

    /// Parameters and optimiser state, as plain data for a checkpoint.
    pub fn state(&self) -> (Vec<f64>, AdamState) {
        let adam = AdamState {
            first_moment: self.optimizer.first_moment.as_slice().to_vec(),
            second_moment: self.optimizer.second_moment.as_slice().to_vec(),
            steps: self.optimizer.steps,
        };
        (self.params.as_slice().to_vec(), adam)
    }

    /// A value function of the given architecture from checkpointed parameters and Adam
    /// state, after checking every length and value.
    pub fn from_state(
        obs_dim: usize,
        hidden: &[usize],
        learning_rate: f64,
        params: &[f64],
        adam: &AdamState,
    ) -> Result<Self, StateError> {
        let mlp = Mlp::new(obs_dim, hidden, 1);
        let n = mlp.parameter_count();
        check_vector("value parameters", params, n, |_| true, "finite")?;
        check_vector(
            "value Adam first moment",
            &adam.first_moment,
            n,
            |_| true,
            "finite",
        )?;
        check_vector(
            "value Adam second moment",
            &adam.second_moment,
            n,
            |v| v >= 0.0,
            "finite and ≥ 0",
        )?;
        let mut optimizer = Adam::new(n, learning_rate);
        optimizer.first_moment = DVector::from_column_slice(&adam.first_moment);
        optimizer.second_moment = DVector::from_column_slice(&adam.second_moment);
        optimizer.steps = adam.steps;
        Ok(Self {
            mlp,
            params: DVector::from_column_slice(params),
            optimizer,
        })
    }

    /// V(s) for each column of `observations` (normalised as the policy sees them).
    pub fn predict(&self, observations: &DMatrix<f64>) -> DVector<f64> {
        let cache = self.mlp.forward(self.params.as_slice(), observations);
        cache.output().row(0).transpose()
    }

    /// Fits V to `targets` by Adam on shuffled minibatches of `batch_size` for `epochs`
    /// passes. `predictions` are V(observations) at the current parameters (the values the
    /// advantages were computed from; they give the explained variance without another
    /// forward pass). A minibatch whose gradient is not finite is skipped, so the parameters
    /// stay finite. Every buffer is allocated once per fit.
    pub fn fit(
        &mut self,
        observations: &DMatrix<f64>,
        targets: &DVector<f64>,
        predictions: &DVector<f64>,
        epochs: usize,
        batch_size: usize,
        rng: &mut impl Rng,
    ) -> ValueFitReport {
        debug_assert_eq!(predictions.len(), targets.len());
        let explained_variance = explained_variance(predictions, targets);
        let obs_dim = observations.nrows();
        let mut order: Vec<usize> = (0..targets.len()).collect();
        let mut cache = ForwardCache::default();
        let mut scratch = PassScratch::default();
        let mut error = Vec::with_capacity(batch_size);
        let mut gradient = vec![0.0; self.params.len()];
        let mut value_loss = 0.0;
        for _ in 0..epochs {
            order.shuffle(rng);
            let (mut loss_sum, mut batches) = (0.0, 0usize);
            for indices in order.chunks(batch_size.max(1)) {
                let inputs = cache.inputs_mut(&self.mlp, indices.len());
                for (column, &i) in inputs.as_mut_slice().chunks_exact_mut(obs_dim).zip(indices) {
                    column.copy_from_slice(&observations.as_slice()[i * obs_dim..][..obs_dim]);
                }
                self.mlp
                    .forward_in_place(self.params.as_slice(), &mut cache);
                // MSE = mean((V − y)²); its gradient with respect to V is 2(V − y)/n.
                let n = indices.len() as f64;
                error.clear();
                error.extend(
                    cache
                        .output()
                        .iter()
                        .zip(indices)
                        .map(|(v, &i)| v - targets[i]),
                );
                let loss = error.iter().map(|e| e * e).sum::<f64>() / n;
                error.iter_mut().for_each(|e| *e *= 2.0 / n);
                self.mlp
                    .vjp_into(&cache, &error, &mut gradient, &mut scratch);
                if loss.is_finite() && gradient.iter().all(|g| g.is_finite()) {
                    self.optimizer.step(self.params.as_mut_slice(), &gradient);
                    loss_sum += loss;
                    batches += 1;
                }
            }
            value_loss = loss_sum / batches.max(1) as f64;
        }
        ValueFitReport {
            value_loss,
            explained_variance,
        }
    }
}

/// 1 − Var(y − ŷ)/Var(y); NaN when Var(y) is 0.
pub fn explained_variance(predictions: &DVector<f64>, targets: &DVector<f64>) -> f64 {
    let variance = |v: &DVector<f64>| {
        let mean = v.mean();
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len().max(1) as f64
    };
    let target_variance = variance(targets);
    if target_variance > 0.0 {
        1.0 - variance(&(targets - predictions)) / target_variance
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trpo::mlp::standard_normal;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut params = DVector::from_vec(vec![3.0, -2.0]);
        let mut adam = Adam::new(2, 0.1);
        for _ in 0..500 {
            let gradient = &params * 2.0;
            adam.step(params.as_mut_slice(), gradient.as_slice());
        }
        assert!(params.norm() < 1e-2, "{params}");
    }

    #[test]
    fn fit_learns_a_smooth_function_and_explained_variance_rises() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x = DMatrix::from_fn(2, 256, |_, _| standard_normal(&mut rng));
        let y = DVector::from_fn(256, |j, _| x[(0, j)].sin() + 0.5 * x[(1, j)]);
        let mut value = ValueFunction::new(2, &[32, 32], 3e-3, &mut rng);
        let first = value.fit(&x, &y, &value.predict(&x), 5, 64, &mut rng);
        let later = value.fit(&x, &y, &value.predict(&x), 40, 64, &mut rng);
        assert!(
            later.value_loss < 0.3 * first.value_loss,
            "{first:?} {later:?}"
        );
        assert!(later.explained_variance > first.explained_variance);
        assert!(explained_variance(&value.predict(&x), &y) > 0.9);
    }

    #[test]
    fn explained_variance_closed_forms() {
        let y = DVector::from_vec(vec![1.0, 2.0, 3.0]);
        approx::assert_abs_diff_eq!(explained_variance(&y, &y), 1.0);
        approx::assert_abs_diff_eq!(explained_variance(&DVector::from_element(3, 2.0), &y), 0.0);
        assert!(explained_variance(&y, &DVector::from_element(3, 1.0)).is_nan());
    }
}
