//! Multi-layer perceptron with tanh hidden layers and a linear output layer, batched over
//! samples (one sample per column), with hand-written reverse (VJP) and forward-mode (JVP)
//! derivatives.
//!
//! Flat parameter layout, which is also the device's wire layout: for each layer in order
//! (hidden layers, then the output layer) the weights row-major `[out][in]` (one row per
//! output unit), then the bias `[out]`.
//!
//! Every layer is one matrix product `W·X + b` over the whole batch; weights are read as
//! strided views straight out of the flat vector, without copies. The products, the f32
//! conversions and the element-wise passes are the [`super::kernels`]; this module is the
//! network built from them.

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use super::kernels::Precision;
use super::kernels::convert::to_single;
use super::kernels::elementwise::{
    add_bias, add_bias_and_tanh, multiply_by_tanh_derivative, row_sums,
};
use super::kernels::gemm::{
    MatrixValues, affine_product, blocked, transpose_product, weight_gradient,
};

/// Where one layer's parameters live in the flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerLayout {
    inputs: usize,
    outputs: usize,
    weights_offset: usize,
    bias_offset: usize,
}

/// The architecture of a tanh MLP. Parameters are kept outside (a flat vector) so the
/// learner can evaluate candidate parameters without cloning networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    layer_sizes: Vec<usize>,
    layouts: Vec<LayerLayout>,
    precision: Precision,
}

/// Activations of every layer from one forward pass: `[inputs, hidden₁, …, outputs]`, each
/// `width × N`. Hidden activations are post-tanh; the last one is the linear output. The
/// buffers are reused when the cache is passed to [`Mlp::forward_into`] again.
#[derive(Clone, Debug, Default)]
pub struct ForwardCache {
    activations: Vec<DMatrix<f64>>,
    /// f32 copies of the activations that feed single-precision products (empty where
    /// none does), made once by the forward pass so the JVPs and VJPs of a conjugate-
    /// gradient solve reuse them instead of converting again.
    single: Vec<Vec<f32>>,
}

impl ForwardCache {
    /// The network outputs, `output_dim × N`.
    pub fn output(&self) -> &DMatrix<f64> {
        // The cache always holds at least the inputs and the output layer.
        &self.activations[self.activations.len() - 1]
    }

    /// Number of samples (columns) in the batch.
    pub fn batch_size(&self) -> usize {
        self.activations[0].ncols()
    }

    /// The f32 copy of activation `k`, when the forward pass made one of its current values.
    fn single(&self, k: usize) -> Option<&[f32]> {
        let copy = self.single.get(k)?;
        (copy.len() == self.activations[k].len() && !copy.is_empty()).then_some(copy.as_slice())
    }

    /// Shapes every activation for `mlp` and `n` samples (reallocating only on change) and
    /// returns the input matrix to fill, `input_dim × n`; then call [`Mlp::forward_in_place`].
    pub fn inputs_mut(&mut self, mlp: &Mlp, n: usize) -> &mut DMatrix<f64> {
        self.activations
            .resize_with(mlp.layer_sizes.len(), || DMatrix::zeros(0, 0));
        for (matrix, &width) in self.activations.iter_mut().zip(&mlp.layer_sizes) {
            if matrix.shape() != (width, n) {
                *matrix = DMatrix::zeros(width, n);
            }
        }
        &mut self.activations[0]
    }
}

/// Reusable buffers of the reverse ([`Mlp::vjp_into`]) and forward-mode
/// ([`Mlp::jvp_into`]) passes, so repeated products allocate nothing.
#[derive(Clone, Debug, Default)]
pub struct PassScratch {
    current: Vec<f64>,
    next: Vec<f64>,
    transposed_weights: Vec<f64>,
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

    /// The same network computing its large products in `precision`.
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

    /// Forward pass over a batch `inputs` (`input_dim × N`), keeping every activation.
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
        debug_assert_eq!(cache.activations.len(), self.layer_sizes.len());
        let n = cache.batch_size();
        let mut scratch = Vec::new();
        let ForwardCache {
            activations,
            single,
        } = cache;
        single.resize_with(self.layouts.len(), Vec::new);
        for (k, layout) in self.layouts.iter().enumerate() {
            let (below, above) = activations.split_at_mut(k + 1);
            let h = below[k].as_slice();
            let copy = &mut single[k];
            if self.precision == Precision::Single && blocked(layout.outputs, layout.inputs, n) {
                // Resized, not cleared: every value is overwritten.
                copy.resize(h.len(), 0.0);
                to_single(copy, h);
            } else {
                copy.clear();
            }
            let h = MatrixValues {
                double: h,
                single: (!copy.is_empty()).then_some(copy.as_slice()),
            };
            let z = above[0].as_mut_slice();
            affine_product(
                z,
                weights_block(params, layout),
                h,
                (layout.outputs, layout.inputs, n),
                false,
                self.precision,
                &mut scratch,
            );
            let bias = &params[layout.bias_offset..layout.bias_offset + layout.outputs];
            if k + 1 < self.layouts.len() {
                add_bias_and_tanh(z, bias, self.precision);
            } else {
                add_bias(z, bias);
            }
        }
    }

    /// Reverse pass (vector-Jacobian product): given `output_grad` = ∂L/∂output per sample
    /// (`output_dim × N`), returns ∂L/∂θ summed over the samples, in the flat layout.
    pub fn vjp(
        &self,
        params: &[f64],
        cache: &ForwardCache,
        output_grad: &DMatrix<f64>,
    ) -> DVector<f64> {
        let mut gradient = DVector::zeros(self.parameter_count());
        self.vjp_into(
            params,
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
        params: &[f64],
        cache: &ForwardCache,
        output_grad: &[f64],
        gradient: &mut [f64],
        scratch: &mut PassScratch,
    ) {
        let n = cache.batch_size();
        debug_assert_eq!(gradient.len(), self.parameter_count());
        debug_assert_eq!(output_grad.len(), self.output_dim() * n);
        let PassScratch {
            current,
            next,
            transposed_weights,
        } = scratch;
        current.clear();
        current.extend_from_slice(output_grad);
        for (k, layout) in self.layouts.iter().enumerate().rev() {
            let below = cache.activations[k].as_slice();
            let upstream = &current[..layout.outputs * n];
            weight_gradient(
                &mut gradient[layout.weights_offset..layout.bias_offset],
                upstream,
                MatrixValues {
                    double: below,
                    single: cache.single(k),
                },
                (layout.outputs, layout.inputs, n),
                self.precision,
                transposed_weights,
            );
            let bias_grad = &mut gradient[layout.bias_offset..layout.bias_offset + layout.outputs];
            row_sums(bias_grad, upstream);
            if k > 0 {
                next.resize(layout.inputs * n, 0.0);
                transpose_product(
                    &mut next[..layout.inputs * n],
                    weights_block(params, layout),
                    upstream,
                    (layout.outputs, layout.inputs, n),
                    self.precision,
                    transposed_weights,
                );
                multiply_by_tanh_derivative(&mut next[..layout.inputs * n], below);
                std::mem::swap(current, next);
            }
        }
    }

    /// Forward-mode pass (Jacobian-vector product): given a parameter direction `v`, returns
    /// `∂output/∂θ · v` for every sample (`output_dim × N`).
    pub fn jvp(&self, params: &[f64], cache: &ForwardCache, direction: &[f64]) -> DMatrix<f64> {
        let n = cache.batch_size();
        let mut scratch = PassScratch::default();
        let tangent = self.jvp_into(params, cache, direction, &mut scratch);
        DMatrix::from_column_slice(self.output_dim(), n, tangent)
    }

    /// [`Mlp::jvp`] into reused buffers; the returned slice (`output_dim × N`,
    /// column-major) lives in `scratch`.
    pub fn jvp_into<'s>(
        &self,
        params: &[f64],
        cache: &ForwardCache,
        direction: &[f64],
        scratch: &'s mut PassScratch,
    ) -> &'s mut [f64] {
        debug_assert_eq!(direction.len(), self.parameter_count());
        let n = cache.batch_size();
        let PassScratch {
            current,
            next,
            transposed_weights,
        } = scratch;
        for (k, layout) in self.layouts.iter().enumerate() {
            let len = layout.outputs * n;
            next.resize(len, 0.0);
            let dims = (layout.outputs, layout.inputs, n);
            // The inputs do not depend on θ: the first layer's tangent is only dW·X + db.
            affine_product(
                &mut next[..len],
                weights_block(direction, layout),
                MatrixValues {
                    double: cache.activations[k].as_slice(),
                    single: cache.single(k),
                },
                dims,
                false,
                self.precision,
                transposed_weights,
            );
            if k > 0 {
                affine_product(
                    &mut next[..len],
                    weights_block(params, layout),
                    MatrixValues::from(&current[..layout.inputs * n]),
                    dims,
                    true,
                    self.precision,
                    transposed_weights,
                );
            }
            add_bias(
                &mut next[..len],
                &direction[layout.bias_offset..layout.bias_offset + layout.outputs],
            );
            if k + 1 < self.layouts.len() {
                multiply_by_tanh_derivative(&mut next[..len], cache.activations[k + 1].as_slice());
            }
            std::mem::swap(current, next);
        }
        &mut current[..self.output_dim() * n]
    }
}

/// The row-major `[out][in]` weight block of a layer in a flat vector.
fn weights_block<'a>(params: &'a [f64], layout: &LayerLayout) -> &'a [f64] {
    &params[layout.weights_offset..layout.bias_offset]
}

/// `W` (`out × in`) copied out of its row-major block in the flat vector.
#[cfg(test)]
fn weights(params: &[f64], layout: &LayerLayout) -> DMatrix<f64> {
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
        let jv = mlp.jvp(params.as_slice(), &cache, direction.as_slice());
        let eps = 1e-6;
        let plus = mlp.forward((&params + &direction * eps).as_slice(), &x);
        let minus = mlp.forward((&params - &direction * eps).as_slice(), &x);
        let numeric = (plus.output() - minus.output()) / (2.0 * eps);
        approx::assert_abs_diff_eq!(jv, numeric, epsilon = 1e-7);
        // ⟨cotangent, J v⟩ = ⟨Jᵀ cotangent, v⟩ ties the VJP to the JVP.
        let vjp = mlp.vjp(params.as_slice(), &cache, &cotangent);
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
            single
                .vjp(params.as_slice(), &cache_s, &cotangent)
                .as_slice(),
            double
                .vjp(params.as_slice(), &cache_d, &cotangent)
                .as_slice(),
        );
        assert!(vjp_error < 1e-5, "vjp: {vjp_error:e}");
        let jvp_error = relative(
            single
                .jvp(params.as_slice(), &cache_s, direction.as_slice())
                .as_slice(),
            double
                .jvp(params.as_slice(), &cache_d, direction.as_slice())
                .as_slice(),
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
            mlp.vjp_into(
                params.as_slice(),
                &cache,
                cotangent.as_slice(),
                &mut gradient,
                &mut scratch,
            );
            assert_eq!(
                gradient.as_slice(),
                mlp.vjp(params.as_slice(), &fresh, &cotangent).as_slice()
            );
            let jv = mlp.jvp_into(
                params.as_slice(),
                &cache,
                direction.as_slice(),
                &mut scratch,
            );
            assert_eq!(
                &*jv,
                mlp.jvp(params.as_slice(), &fresh, direction.as_slice())
                    .as_slice()
            );
        }
    }

    #[test]
    fn orthogonal_init_has_orthonormal_rows_scaled_by_gain_and_zero_bias() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mlp = Mlp::new(3, &[64, 64], 1);
        let params = mlp.initial_parameters(2f64.sqrt(), 0.01, &mut rng);
        let layout = mlp.layouts[1];
        let w = weights(params.as_slice(), &layout);
        approx::assert_abs_diff_eq!(
            &w * w.transpose(),
            DMatrix::identity(64, 64) * 2.0,
            epsilon = 1e-10
        );
        let out = mlp.layouts[2];
        let w_out = weights(params.as_slice(), &out);
        approx::assert_relative_eq!(w_out.norm(), 0.01, max_relative = 1e-10);
        assert!(
            params.as_slice()[layout.bias_offset..layout.bias_offset + 64]
                .iter()
                .all(|b| *b == 0.0)
        );
    }
}
