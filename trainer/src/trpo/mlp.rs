//! Multi-layer perceptron with tanh hidden layers and a linear output layer, batched over
//! samples (one sample per column), with hand-written reverse (VJP) and forward-mode (JVP)
//! derivatives.
//!
//! Flat parameter layout, which is also the device's wire layout: for each layer in order
//! (hidden layers, then the output layer) the weights row-major `[out][in]` (one row per
//! output unit), then the bias `[out]`.
//!
//! Every layer is one matrix product `W·X + b` over the whole batch; weights are read as
//! strided views straight out of the flat parameter vector, without copies. A pass runs in
//! its network's [`Precision`]: the parameters and inputs are rounded to the pass's scalar
//! once, when the forward pass starts, and results (network outputs, gradients, tangents)
//! come back in f64; everything in between stays in that scalar. The derivatives are taken
//! at the forward pass's parameters, which its cache keeps. The products and element-wise
//! passes are the [`super::kernels`]; this module is the network built from them.

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use super::kernels::elementwise::{
    add_bias, add_bias_and_tanh, from_f64, multiply_by_tanh_derivative, row_sums, to_f64,
};
use super::kernels::gemm::{affine_product, transpose_product, weight_gradient};
use super::kernels::{Precision, Real};

/// Where one layer's parameters live in the flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerLayout {
    inputs: usize,
    outputs: usize,
    weights_offset: usize,
    bias_offset: usize,
}

impl LayerLayout {
    /// This layer's row-major `[out][in]` weight block in a flat vector.
    fn weights<'a, T>(&self, params: &'a [T]) -> &'a [T] {
        &params[self.weights_offset..self.bias_offset]
    }

    /// This layer's bias block in a flat vector.
    fn bias<'a, T>(&self, params: &'a [T]) -> &'a [T] {
        &params[self.bias_offset..self.bias_offset + self.outputs]
    }

    /// This layer's weights and bias (contiguous) in a flat vector, writable.
    fn parameters_mut<'a, T>(&self, params: &'a mut [T]) -> &'a mut [T] {
        &mut params[self.weights_offset..self.bias_offset + self.outputs]
    }
}

/// The architecture of a tanh MLP. Parameters are kept outside (a flat vector) so the
/// learner can evaluate candidate parameters without cloning networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    layer_sizes: Vec<usize>,
    layouts: Vec<LayerLayout>,
    precision: Precision,
}

/// One forward pass in the pass scalar `T`: the parameters it ran with and every layer's
/// values `[inputs, hidden₁, …, outputs]`, each `width × N` column-major (hidden layers
/// after tanh, the last one linear).
#[derive(Clone, Debug, Default)]
struct PassValues<T> {
    params: Vec<T>,
    activations: Vec<Vec<T>>,
}

/// Room for a forward pass of either precision; a network fills the one of its own.
#[derive(Clone, Debug, Default)]
struct PassesByScalar {
    single: PassValues<f32>,
    double: PassValues<f64>,
}

/// A forward pass over a batch: its f64 inputs and outputs and, in the pass's scalar,
/// what the derivatives need. The buffers are reused when the cache is passed to
/// [`Mlp::forward_into`] again.
#[derive(Clone, Debug)]
pub struct ForwardCache {
    /// `input_dim × N`.
    inputs: DMatrix<f64>,
    /// `output_dim × N`.
    output: DMatrix<f64>,
    passes: PassesByScalar,
}

impl Default for ForwardCache {
    fn default() -> Self {
        Self {
            inputs: DMatrix::zeros(0, 0),
            output: DMatrix::zeros(0, 0),
            passes: PassesByScalar::default(),
        }
    }
}

impl ForwardCache {
    /// The network outputs, `output_dim × N`.
    pub fn output(&self) -> &DMatrix<f64> {
        &self.output
    }

    /// Number of samples (columns) in the batch.
    pub fn batch_size(&self) -> usize {
        self.inputs.ncols()
    }

    /// The input matrix to fill, `input_dim × n` for `mlp` (reallocated only when its shape
    /// changes); then call [`Mlp::forward_in_place`].
    pub fn inputs_mut(&mut self, mlp: &Mlp, n: usize) -> &mut DMatrix<f64> {
        if self.inputs.shape() != (mlp.input_dim(), n) {
            self.inputs = DMatrix::zeros(mlp.input_dim(), n);
        }
        &mut self.inputs
    }
}

/// Reusable buffers of the reverse and forward-mode passes in one pass scalar.
#[derive(Clone, Debug, Default)]
struct PassBuffers<T> {
    current: Vec<T>,
    next: Vec<T>,
    /// A layer's gradient (reverse), or the direction (forward mode), in `T`.
    parameters: Vec<T>,
    /// Thin products' transposed weights.
    transposed: Vec<T>,
    /// The forward-mode result, in f64.
    tangent: Vec<f64>,
}

/// Reusable buffers of the reverse ([`Mlp::vjp_into`]) and forward-mode
/// ([`Mlp::jvp_into`]) passes, so repeated products allocate nothing.
#[derive(Clone, Debug, Default)]
pub struct PassScratch {
    single: PassBuffers<f32>,
    double: PassBuffers<f64>,
}

/// A pass scalar and where its passes and buffers live.
trait PassScalar: Real {
    fn pass(passes: &PassesByScalar) -> &PassValues<Self>;
    fn pass_mut(passes: &mut PassesByScalar) -> &mut PassValues<Self>;
    fn buffers(scratch: &mut PassScratch) -> &mut PassBuffers<Self>;
}

impl PassScalar for f32 {
    fn pass(passes: &PassesByScalar) -> &PassValues<Self> {
        &passes.single
    }
    fn pass_mut(passes: &mut PassesByScalar) -> &mut PassValues<Self> {
        &mut passes.single
    }
    fn buffers(scratch: &mut PassScratch) -> &mut PassBuffers<Self> {
        &mut scratch.single
    }
}

impl PassScalar for f64 {
    fn pass(passes: &PassesByScalar) -> &PassValues<Self> {
        &passes.double
    }
    fn pass_mut(passes: &mut PassesByScalar) -> &mut PassValues<Self> {
        &mut passes.double
    }
    fn buffers(scratch: &mut PassScratch) -> &mut PassBuffers<Self> {
        &mut scratch.double
    }
}

/// The first `len` elements of `buffer`, grown if it is shorter (never shrunk, so a buffer
/// reused for layers of different widths is zero-filled only once); the caller overwrites
/// them.
fn sized<T: Real>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::ZERO);
    }
    &mut buffer[..len]
}

impl Mlp {
    /// An MLP `input_dim → hidden[0] → … → output_dim`, tanh on hidden layers.
    pub fn new(input_dim: usize, hidden: &[usize], output_dim: usize) -> Self {
        let mut layer_sizes = Vec::with_capacity(hidden.len() + 2);
        layer_sizes.push(input_dim);
        layer_sizes.extend_from_slice(hidden);
        layer_sizes.push(output_dim);
        let mut layouts = Vec::with_capacity(layer_sizes.len() - 1);
        let mut offset = 0;
        for pair in layer_sizes.windows(2) {
            let (inputs, outputs) = (pair[0], pair[1]);
            layouts.push(LayerLayout {
                inputs,
                outputs,
                weights_offset: offset,
                bias_offset: offset + inputs * outputs,
            });
            offset += outputs * (inputs + 1);
        }
        Self {
            layer_sizes,
            layouts,
            precision: Precision::default(),
        }
    }

    /// The same network running its passes in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// Width of the input layer.
    pub fn input_dim(&self) -> usize {
        self.layer_sizes[0]
    }

    /// Width of the (linear) output layer.
    pub fn output_dim(&self) -> usize {
        self.layer_sizes[self.layer_sizes.len() - 1]
    }

    /// Widths of the tanh hidden layers.
    pub fn hidden_sizes(&self) -> &[usize] {
        &self.layer_sizes[1..self.layer_sizes.len() - 1]
    }

    /// Length of the flat parameter vector.
    pub fn parameter_count(&self) -> usize {
        self.layouts
            .iter()
            .map(|l| l.outputs * (l.inputs + 1))
            .sum()
    }

    /// The output layer's input in `cache`'s pass, `width × N` in f64: the last hidden
    /// layer's activations (or the inputs when there is no hidden layer), the features a gSDE
    /// head draws its noise from. In a single-precision pass they are the f32 values the
    /// device computes too, widened.
    pub fn features(&self, cache: &ForwardCache) -> DMatrix<f64> {
        match self.precision {
            Precision::Single => Self::features_of::<f32>(&cache.passes, cache.batch_size()),
            Precision::Double => Self::features_of::<f64>(&cache.passes, cache.batch_size()),
        }
    }

    fn features_of<T: PassScalar>(passes: &PassesByScalar, n: usize) -> DMatrix<f64> {
        let activations = &T::pass(passes).activations;
        let values = &activations[activations.len().saturating_sub(2)];
        let mut features = DMatrix::zeros(values.len() / n.max(1), n);
        to_f64(features.as_mut_slice(), values);
        features
    }

    /// Multiply-adds of one forward pass per sample (Σ in·out over layers); the FLOP model
    /// of the benchmark is built from it.
    pub fn multiply_adds_per_sample(&self) -> usize {
        self.layouts.iter().map(|l| l.outputs * l.inputs).sum()
    }

    /// Orthogonal initialisation (as SB3): each weight matrix is `gain·Q` with `Q` from the QR
    /// decomposition of a standard Gaussian matrix (signs fixed by `diag(R)`), biases zero.
    /// `hidden_gain` scales hidden layers (SB3: √2), `output_gain` the output layer
    /// (SB3: 0.01 for the policy, 1.0 for the value function).
    pub fn initial_parameters(
        &self,
        hidden_gain: f64,
        output_gain: f64,
        rng: &mut impl Rng,
    ) -> DVector<f64> {
        let mut params = DVector::zeros(self.parameter_count());
        for (k, layout) in self.layouts.iter().enumerate() {
            let gain = if k + 1 == self.layouts.len() {
                output_gain
            } else {
                hidden_gain
            };
            let weights = orthogonal_matrix(layout.outputs, layout.inputs, rng) * gain;
            let target = &mut params.as_mut_slice()[layout.weights_offset..layout.bias_offset];
            for row in 0..layout.outputs {
                for col in 0..layout.inputs {
                    target[row * layout.inputs + col] = weights[(row, col)];
                }
            }
        }
        params
    }

    /// Forward pass over a batch `inputs` (`input_dim × N`), keeping what the derivatives
    /// need.
    pub fn forward(&self, params: &[f64], inputs: &DMatrix<f64>) -> ForwardCache {
        let mut cache = ForwardCache::default();
        self.forward_into(params, inputs, &mut cache);
        cache
    }

    /// [`Mlp::forward`] into a reused cache.
    pub fn forward_into(&self, params: &[f64], inputs: &DMatrix<f64>, cache: &mut ForwardCache) {
        cache
            .inputs_mut(self, inputs.ncols())
            .copy_from_slice(inputs.as_slice());
        self.forward_in_place(params, cache);
    }

    /// Forward pass from the inputs already in `cache` (see [`ForwardCache::inputs_mut`]).
    /// Each layer is one product `W·H` followed by one fused pass adding the bias and, on
    /// hidden layers, applying tanh.
    pub fn forward_in_place(&self, params: &[f64], cache: &mut ForwardCache) {
        debug_assert_eq!(params.len(), self.parameter_count());
        debug_assert_eq!(cache.inputs.nrows(), self.input_dim());
        match self.precision {
            Precision::Single => self.forward_pass::<f32>(params, cache),
            Precision::Double => self.forward_pass::<f64>(params, cache),
        }
    }

    fn forward_pass<T: PassScalar>(&self, params: &[f64], cache: &mut ForwardCache) {
        let n = cache.batch_size();
        let pass = T::pass_mut(&mut cache.passes);
        pass.params.resize(params.len(), T::ZERO);
        from_f64(&mut pass.params, params);
        pass.activations
            .resize_with(self.layer_sizes.len(), Vec::new);
        // Exactly `width × n` each: the passes read them whole.
        for (values, &width) in pass.activations.iter_mut().zip(&self.layer_sizes) {
            values.resize(width * n, T::ZERO);
        }
        from_f64(&mut pass.activations[0], cache.inputs.as_slice());
        let mut transposed = Vec::new();
        for (k, layout) in self.layouts.iter().enumerate() {
            let (below, above) = pass.activations.split_at_mut(k + 1);
            let z = &mut above[0];
            affine_product(
                z,
                layout.weights(&pass.params),
                &below[k],
                (layout.outputs, layout.inputs, n),
                false,
                &mut transposed,
            );
            let bias = layout.bias(&pass.params);
            if k + 1 < self.layouts.len() {
                add_bias_and_tanh(z, bias);
            } else {
                add_bias(z, bias);
            }
        }
        if cache.output.shape() != (self.output_dim(), n) {
            cache.output = DMatrix::zeros(self.output_dim(), n);
        }
        to_f64(
            cache.output.as_mut_slice(),
            &pass.activations[self.layouts.len()],
        );
    }

    /// Reverse pass (vector-Jacobian product) at the forward pass's parameters: given
    /// `output_grad` = ∂L/∂output per sample (`output_dim × N`), returns ∂L/∂θ summed over
    /// the samples, in the flat layout.
    pub fn vjp(&self, cache: &ForwardCache, output_grad: &DMatrix<f64>) -> DVector<f64> {
        let mut gradient = DVector::zeros(self.parameter_count());
        self.vjp_into(
            cache,
            output_grad.as_slice(),
            gradient.as_mut_slice(),
            &mut PassScratch::default(),
        );
        gradient
    }

    /// [`Mlp::vjp`] writing into `gradient` (overwritten, flat layout) with reused buffers;
    /// `output_grad` is `output_dim × N` column-major.
    pub fn vjp_into(
        &self,
        cache: &ForwardCache,
        output_grad: &[f64],
        gradient: &mut [f64],
        scratch: &mut PassScratch,
    ) {
        debug_assert_eq!(gradient.len(), self.parameter_count());
        debug_assert_eq!(output_grad.len(), self.output_dim() * cache.batch_size());
        match self.precision {
            Precision::Single => self.vjp_pass::<f32>(cache, output_grad, gradient, scratch),
            Precision::Double => self.vjp_pass::<f64>(cache, output_grad, gradient, scratch),
        }
    }

    fn vjp_pass<T: PassScalar>(
        &self,
        cache: &ForwardCache,
        output_grad: &[f64],
        gradient: &mut [f64],
        scratch: &mut PassScratch,
    ) {
        let n = cache.batch_size();
        let pass = T::pass(&cache.passes);
        let PassBuffers {
            current,
            next,
            parameters,
            transposed,
            ..
        } = T::buffers(scratch);
        from_f64(sized(current, output_grad.len()), output_grad);
        for (k, layout) in self.layouts.iter().enumerate().rev() {
            let below = &pass.activations[k];
            let upstream = &current[..layout.outputs * n];
            let dims = (layout.outputs, layout.inputs, n);
            // The layer's gradient in the flat layout, in `T`, then widened.
            let layer_grad = sized(parameters, layout.outputs * (layout.inputs + 1));
            let (weight_grad, bias_grad) = layer_grad.split_at_mut(layout.outputs * layout.inputs);
            weight_gradient(weight_grad, upstream, below, dims, transposed);
            row_sums(bias_grad, upstream);
            to_f64(layout.parameters_mut(gradient), layer_grad);
            if k > 0 {
                let input_grad = sized(next, layout.inputs * n);
                transpose_product(
                    input_grad,
                    layout.weights(&pass.params),
                    upstream,
                    dims,
                    transposed,
                );
                multiply_by_tanh_derivative(input_grad, below);
                std::mem::swap(current, next);
            }
        }
    }

    /// Forward-mode pass (Jacobian-vector product) at the forward pass's parameters: given
    /// a parameter direction `v`, returns `∂output/∂θ · v` for every sample
    /// (`output_dim × N`).
    pub fn jvp(&self, cache: &ForwardCache, direction: &[f64]) -> DMatrix<f64> {
        let n = cache.batch_size();
        let mut scratch = PassScratch::default();
        let tangent = self.jvp_into(cache, direction, &mut scratch);
        DMatrix::from_column_slice(self.output_dim(), n, tangent)
    }

    /// [`Mlp::jvp`] into reused buffers; the returned slice (`output_dim × N`,
    /// column-major) lives in `scratch`.
    pub fn jvp_into<'s>(
        &self,
        cache: &ForwardCache,
        direction: &[f64],
        scratch: &'s mut PassScratch,
    ) -> &'s mut [f64] {
        debug_assert_eq!(direction.len(), self.parameter_count());
        match self.precision {
            Precision::Single => self.jvp_pass::<f32>(cache, direction, scratch),
            Precision::Double => self.jvp_pass::<f64>(cache, direction, scratch),
        }
    }

    fn jvp_pass<'s, T: PassScalar>(
        &self,
        cache: &ForwardCache,
        direction: &[f64],
        scratch: &'s mut PassScratch,
    ) -> &'s mut [f64] {
        let n = cache.batch_size();
        let pass = T::pass(&cache.passes);
        let PassBuffers {
            current,
            next,
            parameters,
            transposed,
            tangent,
        } = T::buffers(scratch);
        let direction_t = sized(parameters, direction.len());
        from_f64(direction_t, direction);
        for (k, layout) in self.layouts.iter().enumerate() {
            let out = sized(next, layout.outputs * n);
            let dims = (layout.outputs, layout.inputs, n);
            // The inputs do not depend on θ: the first layer's tangent is only dW·X + db.
            let below = &pass.activations[k];
            affine_product(
                out,
                layout.weights(direction_t),
                below,
                dims,
                false,
                transposed,
            );
            if k > 0 {
                let upstream = &current[..layout.inputs * n];
                let weights = layout.weights(&pass.params);
                affine_product(out, weights, upstream, dims, true, transposed);
            }
            add_bias(out, layout.bias(direction_t));
            if k + 1 < self.layouts.len() {
                multiply_by_tanh_derivative(out, &pass.activations[k + 1]);
            }
            std::mem::swap(current, next);
        }
        let len = self.output_dim() * n;
        to_f64(sized(tangent, len), &current[..len]);
        &mut tangent[..len]
    }
}

/// `W` (`out × in`) copied out of its row-major block in the flat vector.
#[cfg(test)]
fn weight_matrix(params: &[f64], layout: &LayerLayout) -> DMatrix<f64> {
    DMatrix::from_row_slice(
        layout.outputs,
        layout.inputs,
        &params[layout.weights_offset..layout.bias_offset],
    )
}

/// A `rows × cols` matrix with orthonormal rows or columns (whichever are fewer).
fn orthogonal_matrix(rows: usize, cols: usize, rng: &mut impl Rng) -> DMatrix<f64> {
    let (tall, short) = (rows.max(cols), rows.min(cols));
    let gaussian = DMatrix::from_fn(tall, short, |_, _| standard_normal(rng));
    let qr = gaussian.qr();
    let mut q = qr.q();
    let r = qr.r();
    for j in 0..short {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    if rows >= cols { q } else { q.transpose() }
}

/// One draw from N(0, 1) by the Box–Muller transform (rand 0.9 has no normal distribution
/// without `rand_distr`).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    // u1 in (0, 1] so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn random_matrix(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |_, _| standard_normal(rng))
    }

    fn random_vector(n: usize, rng: &mut ChaCha8Rng) -> DVector<f64> {
        DVector::from_fn(n, |_, _| standard_normal(rng))
    }

    #[test]
    fn forward_matches_a_per_sample_loop_in_the_wire_layout() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mlp = Mlp::new(3, &[7, 6], 2).with_precision(Precision::Double);
        let params = random_vector(mlp.parameter_count(), &mut rng);
        let x = random_matrix(3, 5, &mut rng);
        let out = mlp.forward(params.as_slice(), &x);
        for s in 0..5 {
            let mut h: Vec<f64> = x.column(s).iter().copied().collect();
            let mut offset = 0;
            for (k, pair) in [3usize, 7, 6, 2].windows(2).enumerate() {
                let (i, o) = (pair[0], pair[1]);
                let mut next = vec![0.0; o];
                for (r, value) in next.iter_mut().enumerate() {
                    let mut acc = params[offset + i * o + r];
                    for (c, hc) in h.iter().enumerate() {
                        acc += params[offset + r * i + c] * hc;
                    }
                    *value = if k < 2 { acc.tanh() } else { acc };
                }
                offset += o * (i + 1);
                h = next;
            }
            for (r, expected) in h.iter().enumerate() {
                approx::assert_abs_diff_eq!(out.output()[(r, s)], expected, epsilon = 1e-12);
            }
        }
    }

    #[test]
    fn vjp_and_jvp_match_central_differences_and_each_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mlp = Mlp::new(3, &[8, 5], 2).with_precision(Precision::Double);
        let params = random_vector(mlp.parameter_count(), &mut rng) * 0.5;
        let x = random_matrix(3, 6, &mut rng);
        let cotangent = random_matrix(2, 6, &mut rng);
        let direction = random_vector(mlp.parameter_count(), &mut rng);
        let cache = mlp.forward(params.as_slice(), &x);
        let jv = mlp.jvp(&cache, direction.as_slice());
        let eps = 1e-6;
        let plus = mlp.forward((&params + &direction * eps).as_slice(), &x);
        let minus = mlp.forward((&params - &direction * eps).as_slice(), &x);
        let numeric = (plus.output() - minus.output()) / (2.0 * eps);
        approx::assert_abs_diff_eq!(jv, numeric, epsilon = 1e-7);
        // ⟨cotangent, J v⟩ = ⟨Jᵀ cotangent, v⟩ ties the VJP to the JVP.
        let vjp = mlp.vjp(&cache, &cotangent);
        approx::assert_relative_eq!(
            cotangent.dot(&jv),
            vjp.dot(&direction),
            max_relative = 1e-10
        );
    }

    /// The pendulum-sized network (blocked products) in single precision stays within f32
    /// rounding of the double-precision forward, reverse and forward-mode passes.
    #[test]
    fn single_precision_passes_track_double_precision() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let double = Mlp::new(3, &[64, 64], 1).with_precision(Precision::Double);
        let single = double.clone().with_precision(Precision::Single);
        let params = double.initial_parameters(std::f64::consts::SQRT_2, 1.0, &mut rng);
        let x = random_matrix(3, 512, &mut rng);
        let cotangent = random_matrix(1, 512, &mut rng);
        let direction = random_vector(double.parameter_count(), &mut rng);
        let (cache_d, cache_s) = (
            double.forward(params.as_slice(), &x),
            single.forward(params.as_slice(), &x),
        );
        let relative = |a: &[f64], b: &[f64]| {
            let difference: f64 = a.iter().zip(b).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f64 = b.iter().map(|b| b * b).sum();
            (difference / norm).sqrt()
        };
        let forward_error = relative(cache_s.output().as_slice(), cache_d.output().as_slice());
        assert!(forward_error < 1e-5, "forward: {forward_error:e}");
        assert!(forward_error > 0.0, "single precision was not used");
        let vjp_error = relative(
            single.vjp(&cache_s, &cotangent).as_slice(),
            double.vjp(&cache_d, &cotangent).as_slice(),
        );
        assert!(vjp_error < 1e-5, "vjp: {vjp_error:e}");
        let jvp_error = relative(
            single.jvp(&cache_s, direction.as_slice()).as_slice(),
            double.jvp(&cache_d, direction.as_slice()).as_slice(),
        );
        assert!(jvp_error < 1e-5, "jvp: {jvp_error:e}");
    }

    #[test]
    fn reused_buffers_give_the_same_results_as_fresh_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mlp = Mlp::new(3, &[16, 8], 2);
        let params = random_vector(mlp.parameter_count(), &mut rng);
        let direction = random_vector(mlp.parameter_count(), &mut rng);
        let mut cache = ForwardCache::default();
        let mut scratch = PassScratch::default();
        let mut gradient = vec![0.0; mlp.parameter_count()];
        for n in [5, 9, 5] {
            let x = random_matrix(3, n, &mut rng);
            let cotangent = random_matrix(2, n, &mut rng);
            let fresh = mlp.forward(params.as_slice(), &x);
            mlp.forward_into(params.as_slice(), &x, &mut cache);
            assert_eq!(cache.output(), fresh.output());
            mlp.vjp_into(&cache, cotangent.as_slice(), &mut gradient, &mut scratch);
            assert_eq!(gradient.as_slice(), mlp.vjp(&fresh, &cotangent).as_slice());
            let jv = mlp.jvp_into(&cache, direction.as_slice(), &mut scratch);
            assert_eq!(&*jv, mlp.jvp(&fresh, direction.as_slice()).as_slice());
        }
    }

    #[test]
    fn orthogonal_init_has_orthonormal_rows_scaled_by_gain_and_zero_bias() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mlp = Mlp::new(3, &[64, 64], 1);
        let params = mlp.initial_parameters(2f64.sqrt(), 0.01, &mut rng);
        let layout = mlp.layouts[1];
        let w = weight_matrix(params.as_slice(), &layout);
        approx::assert_abs_diff_eq!(
            &w * w.transpose(),
            DMatrix::identity(64, 64) * 2.0,
            epsilon = 1e-10
        );
        let out = mlp.layouts[2];
        let w_out = weight_matrix(params.as_slice(), &out);
        approx::assert_relative_eq!(w_out.norm(), 0.01, max_relative = 1e-10);
        assert!(
            params.as_slice()[layout.bias_offset..layout.bias_offset + 64]
                .iter()
                .all(|b| *b == 0.0)
        );
    }
}
