//! Multi-layer perceptron with tanh hidden layers and a linear output layer, batched over
//! samples (one sample per column), with hand-written reverse (VJP) and forward-mode (JVP)
//! derivatives.
//!
//! Flat parameter layout, which is also the device's wire layout: for each layer in order
//! (hidden layers, then the output layer) the weights row-major `[out][in]` (one row per
//! output unit), then the bias `[out]`.
//!
//! Every layer is one matrix product `W·X + b` over the whole batch; weights are used as
//! strided views straight out of the flat vector so nalgebra hands them to `matrixmultiply`
//! without copies.

use nalgebra::{DMatrix, DMatrixViewMut, DVector, Dyn, MatrixView};

use rand::Rng;

/// A matrix view with run-time row and column strides (row-major or transposed data).
type StridedView<'a> = MatrixView<'a, f64, Dyn, Dyn, Dyn, Dyn>;

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
}

/// Activations of every layer from one forward pass: `[inputs, hidden₁, …, outputs]`, each
/// `width × N`. Hidden activations are post-tanh; the last one is the linear output.
#[derive(Clone, Debug)]
pub struct ForwardCache {
    activations: Vec<DMatrix<f64>>,
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
        }
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
        debug_assert_eq!(params.len(), self.parameter_count());
        debug_assert_eq!(inputs.nrows(), self.input_dim());
        let n = inputs.ncols();
        let mut activations = Vec::with_capacity(self.layouts.len() + 1);
        activations.push(inputs.clone());
        for (k, layout) in self.layouts.iter().enumerate() {
            let mut z = DMatrix::zeros(layout.outputs, n);
            gemm(
                &mut z.as_view_mut(),
                &weights(params, layout),
                &view(&activations[k]),
                0.0,
            );
            let bias = &params[layout.bias_offset..layout.bias_offset + layout.outputs];
            let hidden = k + 1 < self.layouts.len();
            for column in z.as_mut_slice().chunks_exact_mut(layout.outputs) {
                for (value, b) in column.iter_mut().zip(bias) {
                    *value += b;
                    if hidden {
                        *value = value.tanh();
                    }
                }
            }
            activations.push(z);
        }
        ForwardCache { activations }
    }

    /// Reverse pass (vector-Jacobian product): given `output_grad` = ∂L/∂output per sample
    /// (`output_dim × N`), returns ∂L/∂θ summed over the samples, in the flat layout.
    pub fn vjp(
        &self,
        params: &[f64],
        cache: &ForwardCache,
        output_grad: &DMatrix<f64>,
    ) -> DVector<f64> {
        let n = cache.batch_size();
        let mut gradient = DVector::zeros(self.parameter_count());
        let mut upstream = output_grad.clone();
        for (k, layout) in self.layouts.iter().enumerate().rev() {
            let below = &cache.activations[k];
            let grad = gradient.as_mut_slice();
            // ∂L/∂Wᵀ = H_below · Gᵀ, written straight into the row-major weight block.
            let mut weights_grad = DMatrixViewMut::from_slice(
                &mut grad[layout.weights_offset..layout.bias_offset],
                layout.inputs,
                layout.outputs,
            );
            gemm(&mut weights_grad, &view(below), &transposed(&upstream), 0.0);
            let bias_grad = &mut grad[layout.bias_offset..layout.bias_offset + layout.outputs];
            for column in upstream.as_slice().chunks_exact(layout.outputs) {
                for (b, g) in bias_grad.iter_mut().zip(column) {
                    *b += g;
                }
            }
            if k > 0 {
                let mut next = DMatrix::zeros(layout.inputs, n);
                gemm(
                    &mut next.as_view_mut(),
                    &weights_transposed(params, layout),
                    &view(&upstream),
                    0.0,
                );
                multiply_by_tanh_derivative(&mut next, below);
                upstream = next;
            }
        }
        gradient
    }

    /// Forward-mode pass (Jacobian-vector product): given a parameter direction `v`, returns
    /// `∂output/∂θ · v` for every sample (`output_dim × N`).
    pub fn jvp(&self, params: &[f64], cache: &ForwardCache, direction: &[f64]) -> DMatrix<f64> {
        debug_assert_eq!(direction.len(), self.parameter_count());
        let n = cache.batch_size();
        // The inputs do not depend on θ: the first layer's tangent is only dW·X + db.
        let mut tangent: Option<DMatrix<f64>> = None;
        for (k, layout) in self.layouts.iter().enumerate() {
            let mut dz = DMatrix::zeros(layout.outputs, n);
            gemm(
                &mut dz.as_view_mut(),
                &weights(direction, layout),
                &view(&cache.activations[k]),
                0.0,
            );
            if let Some(below) = &tangent {
                gemm(
                    &mut dz.as_view_mut(),
                    &weights(params, layout),
                    &view(below),
                    1.0,
                );
            }
            let bias = &direction[layout.bias_offset..layout.bias_offset + layout.outputs];
            for column in dz.as_mut_slice().chunks_exact_mut(layout.outputs) {
                for (value, b) in column.iter_mut().zip(bias) {
                    *value += b;
                }
            }
            if k + 1 < self.layouts.len() {
                multiply_by_tanh_derivative(&mut dz, &cache.activations[k + 1]);
            }
            tangent = Some(dz);
        }
        tangent.unwrap_or_else(|| DMatrix::zeros(self.output_dim(), n))
    }
}

/// `W` (`out × in`) as a view of its row-major block in the flat vector.
fn weights<'a>(params: &'a [f64], layout: &LayerLayout) -> StridedView<'a> {
    StridedView::from_slice_with_strides_generic(
        &params[layout.weights_offset..layout.bias_offset],
        Dyn(layout.outputs),
        Dyn(layout.inputs),
        Dyn(layout.inputs),
        Dyn(1),
    )
}

/// `Wᵀ` (`in × out`) as a view of the same block (row-major `W` is column-major `Wᵀ`).
fn weights_transposed<'a>(params: &'a [f64], layout: &LayerLayout) -> StridedView<'a> {
    StridedView::from_slice_with_strides_generic(
        &params[layout.weights_offset..layout.bias_offset],
        Dyn(layout.inputs),
        Dyn(layout.outputs),
        Dyn(1),
        Dyn(layout.inputs),
    )
}

/// The transpose of an owned matrix as a view, without copying.
fn transposed(matrix: &DMatrix<f64>) -> StridedView<'_> {
    StridedView::from_slice_with_strides_generic(
        matrix.as_slice(),
        Dyn(matrix.ncols()),
        Dyn(matrix.nrows()),
        Dyn(matrix.nrows()),
        Dyn(1),
    )
}

/// An owned matrix as a strided view.
fn view(matrix: &DMatrix<f64>) -> StridedView<'_> {
    StridedView::from_slice_with_strides_generic(
        matrix.as_slice(),
        Dyn(matrix.nrows()),
        Dyn(matrix.ncols()),
        Dyn(1),
        Dyn(matrix.nrows()),
    )
}

/// Smallest dimension nalgebra hands to `matrixmultiply` (its own threshold is "> 5").
const BLOCKED_GEMM_MIN_DIM: usize = 6;

/// `c = a·b + beta·c`. Large products go to nalgebra's `gemm` (`matrixmultiply`, which
/// handles any strides); products with a dimension below nalgebra's threshold (the 3-wide
/// input layer, the 1-wide output layer) use a plain loop, because nalgebra's small-matrix
/// fallback indexes strided views out of bounds.
fn gemm(c: &mut DMatrixViewMut<'_, f64>, a: &StridedView<'_>, b: &StridedView<'_>, beta: f64) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    debug_assert_eq!((c.nrows(), c.ncols(), b.nrows()), (m, n, k));
    if m.min(k).min(n) >= BLOCKED_GEMM_MIN_DIM {
        c.gemm(1.0, a, b, beta);
        return;
    }
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.scale_mut(beta);
    }
    for j in 0..n {
        for p in 0..k {
            let bpj = b[(p, j)];
            if bpj != 0.0 {
                for i in 0..m {
                    c[(i, j)] += a[(i, p)] * bpj;
                }
            }
        }
    }
}

/// `tangent ⊙= 1 − h²`, the derivative of tanh expressed through its output `h`.
fn multiply_by_tanh_derivative(tangent: &mut DMatrix<f64>, activation: &DMatrix<f64>) {
    for (t, h) in tangent.iter_mut().zip(activation.iter()) {
        *t *= 1.0 - h * h;
    }
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
        let mlp = Mlp::new(3, &[7, 6], 2);
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
        let mlp = Mlp::new(3, &[8, 5], 2);
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

    #[test]
    fn orthogonal_init_has_orthonormal_rows_scaled_by_gain_and_zero_bias() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mlp = Mlp::new(3, &[64, 64], 1);
        let params = mlp.initial_parameters(2f64.sqrt(), 0.01, &mut rng);
        let layout = mlp.layouts[1];
        let w = weights(params.as_slice(), &layout).into_owned();
        approx::assert_abs_diff_eq!(
            &w * w.transpose(),
            DMatrix::identity(64, 64) * 2.0,
            epsilon = 1e-10
        );
        let out = mlp.layouts[2];
        let w_out = weights(params.as_slice(), &out).into_owned();
        approx::assert_relative_eq!(w_out.norm(), 0.01, max_relative = 1e-10);
        assert!(
            params.as_slice()[layout.bias_offset..layout.bias_offset + 64]
                .iter()
                .all(|b| *b == 0.0)
        );
    }
}
