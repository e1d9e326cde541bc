//! The value function V(s): its own tanh MLP (output gain 1), fitted to the GAE value
//! targets by Adam on shuffled minibatches for a few epochs per iteration (as SB3-contrib's
//! TRPO critic), mean-squared-error loss.

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand::seq::SliceRandom;

use super::kernels::vector_dispatch;
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

    /// θ ← θ − lr · m̂ / (sqrt(v̂) + ε), arranged as PyTorch's Adam: θ ← θ − (lr / c₁) · m /
    /// (sqrt(v) / sqrt(c₂) + ε), with cᵢ = 1 − βᵢᵗ the bias corrections.
    fn step(&mut self, params: &mut [f64], gradient: &[f64]) {
        self.steps = self.steps.saturating_add(1);
        // Beyond 2³¹ steps β^t is 0 in f64 anyway; the clamp only keeps `powi` in range.
        let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let coefficients = AdamCoefficients {
            beta1: self.beta1,
            beta2: self.beta2,
            step_size: self.learning_rate / correction1,
            inverse_sqrt_correction2: 1.0 / correction2.sqrt(),
            epsilon: self.epsilon,
        };
        adam_update(
            params,
            gradient,
            self.first_moment.as_mut_slice(),
            self.second_moment.as_mut_slice(),
            coefficients,
        );
    }
}

/// The per-step constants of [`Adam::step`].
#[derive(Clone, Copy, Debug)]
struct AdamCoefficients {
    beta1: f64,
    beta2: f64,
    /// lr / c₁.
    step_size: f64,
    /// 1 / sqrt(c₂).
    inverse_sqrt_correction2: f64,
    epsilon: f64,
}

vector_dispatch! {
    /// Adam's element-wise update of the parameters and both moments (a square root and a
    /// division per parameter, once per minibatch: worth the wider vectors).
    fn adam_update => adam_update_impl(params: &mut [f64], gradient: &[f64], first_moment: &mut [f64], second_moment: &mut [f64], c: AdamCoefficients)
}

#[inline(always)]
fn adam_update_impl(
    params: &mut [f64],
    gradient: &[f64],
    first_moment: &mut [f64],
    second_moment: &mut [f64],
    c: AdamCoefficients,
) {
    let n = params.len();
    let (gradient, first_moment, second_moment) = (
        &gradient[..n],
        &mut first_moment[..n],
        &mut second_moment[..n],
    );
    for i in 0..n {
        let g = gradient[i];
        let m = c.beta1 * first_moment[i] + (1.0 - c.beta1) * g;
        let v = c.beta2 * second_moment[i] + (1.0 - c.beta2) * g * g;
        first_moment[i] = m;
        second_moment[i] = v;
        params[i] -= c.step_size * m / (v.sqrt() * c.inverse_sqrt_correction2 + c.epsilon);
    }
}

vector_dispatch! {
    /// `sum = a + b` element-wise; whether every element of `sum` is finite.
    fn add_halves => add_halves_impl(sum: &mut [f64], a: &[f64], b: &[f64]) -> bool
}

#[inline(always)]
fn add_halves_impl(sum: &mut [f64], a: &[f64], b: &[f64]) -> bool {
    let mut finite = true;
    for ((s, &x), &y) in sum.iter_mut().zip(a).zip(b) {
        *s = x + y;
        finite &= s.is_finite();
    }
    finite
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
    ///
    /// Each minibatch's forward and reverse passes run as two halves, side by side when a
    /// core is free (the fit runs beside the policy step, and outlasts it); the halves'
    /// gradients are added in order, so the result does not depend on the thread count.
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
        let data = FitData {
            mlp: &self.mlp,
            observations,
            targets,
        };
        let mut order: Vec<usize> = (0..targets.len()).collect();
        let mut halves: [MinibatchHalf; 2] = Default::default();
        let mut gradient = vec![0.0; self.params.len()];
        let mut value_loss = 0.0;
        for _ in 0..epochs {
            order.shuffle(rng);
            let (mut loss_sum, mut batches) = (0.0, 0usize);
            for indices in order.chunks(batch_size.max(1)) {
                let n = indices.len() as f64;
                let (first, second) = indices.split_at(indices.len().div_ceil(2));
                let [a, b] = &mut halves;
                let params = self.params.as_slice();
                let (loss_a, loss_b) = rayon::join(
                    || a.pass(&data, params, first, n),
                    || b.pass(&data, params, second, n),
                );
                let loss = loss_a + loss_b;
                let finite = add_halves(&mut gradient, &a.gradient, &b.gradient);
                if loss.is_finite() && finite {
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

/// What every minibatch of a fit reads.
struct FitData<'a> {
    mlp: &'a Mlp,
    observations: &'a DMatrix<f64>,
    targets: &'a DVector<f64>,
}

/// One half of a minibatch: its buffers and its share of the loss gradient.
#[derive(Default)]
struct MinibatchHalf {
    cache: ForwardCache,
    scratch: PassScratch,
    error: Vec<f64>,
    gradient: Vec<f64>,
}

impl MinibatchHalf {
    /// The MSE terms of the samples `indices` of a minibatch of `n`: fills `gradient` with
    /// their part of ∇θ MSE and returns their part of the MSE, Σ(V − y)²/n.
    fn pass(&mut self, data: &FitData<'_>, params: &[f64], indices: &[usize], n: f64) -> f64 {
        let mlp = data.mlp;
        self.gradient.resize(mlp.parameter_count(), 0.0);
        if indices.is_empty() {
            self.gradient.fill(0.0);
            return 0.0;
        }
        let obs_dim = mlp.input_dim();
        let inputs = self.cache.inputs_mut(mlp, indices.len());
        for (column, &i) in inputs.as_mut_slice().chunks_exact_mut(obs_dim).zip(indices) {
            column.copy_from_slice(&data.observations.as_slice()[i * obs_dim..][..obs_dim]);
        }
        mlp.forward_in_place(params, &mut self.cache);
        // MSE = mean((V − y)²); its gradient with respect to V is 2(V − y)/n.
        self.error.clear();
        self.error.extend(
            self.cache
                .output()
                .iter()
                .zip(indices)
                .map(|(v, &i)| v - data.targets[i]),
        );
        let loss = self.error.iter().map(|e| e * e).sum::<f64>() / n;
        self.error.iter_mut().for_each(|e| *e *= 2.0 / n);
        mlp.vjp_into(
            &self.cache,
            &self.error,
            &mut self.gradient,
            &mut self.scratch,
        );
        loss
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
