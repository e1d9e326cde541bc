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

use std::cell::RefCell;

use nalgebra::{DMatrix, DMatrixViewMut, DVector, Dyn, MatrixView, Scalar};

use rand::Rng;

/// A matrix view with run-time row and column strides (row-major or transposed data).
#[cfg(test)]
type StridedView<'a> = MatrixView<'a, f64, Dyn, Dyn, Dyn, Dyn>;

/// Defines `fn $name(args)` calling `$imp(args)`, compiled a second time with AVX2 and
/// picked at run time on x86-64 CPUs that have it (the baseline target has only SSE2's
/// 2-lane vectors; these loops are the element-wise and thin-product work between the
/// `matrixmultiply` calls). Results are bit-identical either way: the vectoriser keeps the
/// scalar code's IEEE operations and their order, and no FMA is enabled.
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* fn $name:ident => $imp:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                // SAFETY: the running CPU supports AVX2, checked just above.
                unsafe { avx2($($arg),*) };
                return;
            }
            $imp($($arg),*)
        }
    };
}

/// Where one layer's parameters live in the flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerLayout {
    inputs: usize,
    outputs: usize,
    weights_offset: usize,
    bias_offset: usize,
}

/// Arithmetic of the large matrix products (the 64 × 64 layers over a batch).
///
/// Everything else — parameters, activations, the learner's vectors — is f64 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 products (the default, as SB3 and PyTorch train): twice the multiply-adds per
    /// instruction; relative error ≈ 1e-6, far below a policy gradient's sampling noise.
    #[default]
    Single,
    /// f64 products: exact to ≈ 1e-15, for checks against finite differences.
    Double,
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
            let h = Values {
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
                Values {
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
                Values {
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
                    Values::from(&current[..layout.inputs * n]),
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

/// `W` (`out × in`) as a view of its row-major block in the flat vector.
#[cfg(test)]
fn weights<'a>(params: &'a [f64], layout: &LayerLayout) -> StridedView<'a> {
    strided(
        &params[layout.weights_offset..layout.bias_offset],
        (layout.outputs, layout.inputs),
        (layout.inputs, 1),
    )
}

/// A `rows × cols` view of `data` with the given (row, column) strides.
fn strided<T: Scalar>(
    data: &[T],
    (rows, cols): (usize, usize),
    (rs, cs): (usize, usize),
) -> MatrixView<'_, T, Dyn, Dyn, Dyn, Dyn> {
    MatrixView::from_slice_with_strides_generic(data, Dyn(rows), Dyn(cols), Dyn(rs), Dyn(cs))
}

/// Smallest dimension nalgebra hands to `matrixmultiply` (its own threshold is "> 5").
/// Below it nalgebra's small-matrix fallback indexes strided views out of bounds, so
/// thinner products (the 3-wide input layer, the 1-wide output layer) use the loops below,
/// each arranged so its innermost loop runs over contiguous memory.
const BLOCKED_GEMM_MIN_DIM: usize = 6;

/// Whether a product of these dimensions goes to `matrixmultiply`.
fn blocked(m: usize, k: usize, n: usize) -> bool {
    m.min(k).min(n) >= BLOCKED_GEMM_MIN_DIM
}

/// A matrix's values, with their f32 copy when the caller keeps one (see
/// [`ForwardCache`]).
#[derive(Clone, Copy, Debug)]
struct Values<'a> {
    double: &'a [f64],
    single: Option<&'a [f32]>,
}

impl<'a> From<&'a [f64]> for Values<'a> {
    fn from(double: &'a [f64]) -> Self {
        Values {
            double,
            single: None,
        }
    }
}

/// One operand of [`blocked_gemm`]: values, (rows, cols), (row stride, col stride).
type Operand<'a> = (Values<'a>, (usize, usize), (usize, usize));

thread_local! {
    /// Per-thread f32 copies of the operands and the product of [`blocked_gemm`],
    /// reused so the hot loop allocates nothing (rayon's FVP chunks each get their own).
    static SINGLE_PRECISION_SCRATCH: RefCell<[Vec<f32>; 3]> = const {
        RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// `c = a·b` (or `c += a·b` when `accumulate`), `c` column-major `rows × cols`, by
/// `matrixmultiply` in the given precision. Single precision converts the operands to f32
/// copies first, unless the caller passes one (the conversions are O(size), the product
/// O(size × inner dimension)); the result is still a deterministic function of the inputs.
fn blocked_gemm(
    c: &mut [f64],
    (rows, cols): (usize, usize),
    a: Operand<'_>,
    b: Operand<'_>,
    accumulate: bool,
    precision: Precision,
) {
    if precision == Precision::Double {
        let mut product = DMatrixViewMut::from_slice(c, rows, cols);
        let beta = if accumulate { 1.0 } else { 0.0 };
        product.gemm(
            1.0,
            &strided(a.0.double, a.1, a.2),
            &strided(b.0.double, b.1, b.2),
            beta,
        );
        return;
    }
    SINGLE_PRECISION_SCRATCH.with_borrow_mut(|[a32, b32, c32]| {
        // Sized without clearing: every element is overwritten below (β = 0 never reads C).
        let (a32, b32) = (single_values(a.0, a32), single_values(b.0, b32));
        c32.resize(rows * cols, 0.0);
        let c32 = &mut c32[..rows * cols];
        let mut product = DMatrixViewMut::from_slice(c32, rows, cols);
        product.gemm(1.0, &strided(a32, a.1, a.2), &strided(b32, b.1, b.2), 0.0);
        from_single(c, c32, accumulate);
    });
}

/// `values` in f32: the caller's copy when it has one, else converted into `buffer`.
fn single_values<'a>(values: Values<'a>, buffer: &'a mut Vec<f32>) -> &'a [f32] {
    if let Some(copy) = values.single {
        return copy;
    }
    buffer.resize(values.double.len(), 0.0);
    let buffer = &mut buffer[..values.double.len()];
    to_single(buffer, values.double);
    buffer
}

avx2_dispatch! {
    /// `single = double` element-wise, rounded to nearest.
    fn to_single => to_single_impl(single: &mut [f32], double: &[f64])
}

#[inline(always)]
fn to_single_impl(single: &mut [f32], double: &[f64]) {
    for (s, &d) in single.iter_mut().zip(double) {
        *s = d as f32;
    }
}

avx2_dispatch! {
    /// `double = single` (or `double += single` when `accumulate`) element-wise.
    fn from_single => from_single_impl(double: &mut [f64], single: &[f32], accumulate: bool)
}

#[inline(always)]
fn from_single_impl(double: &mut [f64], single: &[f32], accumulate: bool) {
    if accumulate {
        for (d, &s) in double.iter_mut().zip(single) {
            *d += f64::from(s);
        }
    } else {
        for (d, &s) in double.iter_mut().zip(single) {
            *d = f64::from(s);
        }
    }
}

avx2_dispatch! {
    /// `z = W·H` (or `z += W·H` when `accumulate`), `W` row-major `out × in` in `w`, `H` and
    /// `z` column-major (`in × n`, `out × n`).
    fn affine_product => affine_product_impl(z: &mut [f64], w: &[f64], h: Values<'_>, dims: (usize, usize, usize), accumulate: bool, precision: Precision, scratch: &mut Vec<f64>)
}

#[inline(always)]
fn affine_product_impl(
    z: &mut [f64],
    w: &[f64],
    h: Values<'_>,
    (out, inp, n): (usize, usize, usize),
    accumulate: bool,
    precision: Precision,
    scratch: &mut Vec<f64>,
) {
    if blocked(out, inp, n) {
        blocked_gemm(
            z,
            (out, n),
            (w.into(), (out, inp), (inp, 1)),
            (h, (inp, n), (1, inp)),
            accumulate,
            precision,
        );
        return;
    }
    if !accumulate {
        z.fill(0.0);
    }
    if inp >= out {
        // One dot product of length `in` per output.
        for (zj, hj) in z.chunks_exact_mut(out).zip(h.double.chunks_exact(inp)) {
            for (value, row) in zj.iter_mut().zip(w.chunks_exact(inp)) {
                *value += dot(row, hj);
            }
        }
    } else {
        // Wide output: axpy of W's columns (transposed into `scratch` once).
        let wt = transpose_into(scratch, w, out, inp);
        for (zj, hj) in z.chunks_exact_mut(out).zip(h.double.chunks_exact(inp)) {
            for (column, &s) in wt.chunks_exact(out).zip(hj) {
                axpy(zj, s, column);
            }
        }
    }
}

avx2_dispatch! {
    /// `g = U·Hᵀ` (overwritten) with `g` row-major `out × in` (a weight gradient), `U`
    /// column-major `out × n`, `H` column-major `in × n`.
    fn weight_gradient => weight_gradient_impl(g: &mut [f64], u: &[f64], h: Values<'_>, dims: (usize, usize, usize), precision: Precision, scratch: &mut Vec<f64>)
}

#[inline(always)]
fn weight_gradient_impl(
    g: &mut [f64],
    u: &[f64],
    h: Values<'_>,
    (out, inp, n): (usize, usize, usize),
    precision: Precision,
    scratch: &mut Vec<f64>,
) {
    if blocked(out, inp, n) {
        // Row-major `out × in` is column-major `in × out`: gᵀ = H·Uᵀ.
        blocked_gemm(
            g,
            (inp, out),
            (h, (inp, n), (1, inp)),
            (u.into(), (n, out), (out, 1)),
            false,
            precision,
        );
        return;
    }
    g.fill(0.0);
    if inp >= out {
        for (uj, hj) in u.chunks_exact(out).zip(h.double.chunks_exact(inp)) {
            for (row, &s) in g.chunks_exact_mut(inp).zip(uj) {
                axpy(row, s, hj);
            }
        }
    } else {
        // Accumulate column-major (contiguous over the wide `out`), then transpose.
        scratch.clear();
        scratch.resize(out * inp, 0.0);
        for (uj, hj) in u.chunks_exact(out).zip(h.double.chunks_exact(inp)) {
            for (column, &s) in scratch.chunks_exact_mut(out).zip(hj) {
                axpy(column, s, uj);
            }
        }
        for (p, column) in scratch.chunks_exact(out).enumerate() {
            for (i, &value) in column.iter().enumerate() {
                g[i * inp + p] = value;
            }
        }
    }
}

avx2_dispatch! {
    /// `x = Wᵀ·U` (overwritten), `W` row-major `out × in`, `U` column-major `out × n`, `x`
    /// column-major `in × n`: the gradient with respect to a layer's inputs.
    fn transpose_product => transpose_product_impl(x: &mut [f64], w: &[f64], u: &[f64], dims: (usize, usize, usize), precision: Precision, scratch: &mut Vec<f64>)
}

#[inline(always)]
fn transpose_product_impl(
    x: &mut [f64],
    w: &[f64],
    u: &[f64],
    (out, inp, n): (usize, usize, usize),
    precision: Precision,
    scratch: &mut Vec<f64>,
) {
    if blocked(out, inp, n) {
        // Row-major `W` read as column-major is `Wᵀ` (`in × out`).
        blocked_gemm(
            x,
            (inp, n),
            (w.into(), (inp, out), (1, inp)),
            (u.into(), (out, n), (1, out)),
            false,
            precision,
        );
        return;
    }
    if inp >= out {
        x.fill(0.0);
        for (xj, uj) in x.chunks_exact_mut(inp).zip(u.chunks_exact(out)) {
            for (row, &s) in w.chunks_exact(inp).zip(uj) {
                axpy(xj, s, row);
            }
        }
    } else {
        let wt = transpose_into(scratch, w, out, inp);
        for (xj, uj) in x.chunks_exact_mut(inp).zip(u.chunks_exact(out)) {
            for (value, column) in xj.iter_mut().zip(wt.chunks_exact(out)) {
                *value = dot(column, uj);
            }
        }
    }
}

/// Row-major `rows × cols` `w` copied column-major into `buffer` (so each column is
/// contiguous).
fn transpose_into<'a>(buffer: &'a mut Vec<f64>, w: &[f64], rows: usize, cols: usize) -> &'a [f64] {
    buffer.clear();
    buffer.extend((0..cols).flat_map(|c| (0..rows).map(move |r| w[r * cols + c])));
    buffer
}

/// `y += a·x`.
#[inline(always)]
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `x·y` with four independent accumulators (so the additions pipeline and vectorise).
#[inline(always)]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for l in 0..4 {
            acc[l] += a[l] * b[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

avx2_dispatch! {
    /// Adds `bias` (one per row) to every column of the column-major `z`.
    fn add_bias => add_bias_impl(z: &mut [f64], bias: &[f64])
}

#[inline(always)]
fn add_bias_impl(z: &mut [f64], bias: &[f64]) {
    for column in z.chunks_exact_mut(bias.len()) {
        for (value, b) in column.iter_mut().zip(bias) {
            *value += b;
        }
    }
}

avx2_dispatch! {
    /// `sums[i] = Σⱼ u[i, j]` over the columns of the column-major `u` (a bias gradient).
    fn row_sums => row_sums_impl(sums: &mut [f64], u: &[f64])
}

#[inline(always)]
fn row_sums_impl(sums: &mut [f64], u: &[f64]) {
    sums.fill(0.0);
    for column in u.chunks_exact(sums.len()) {
        for (sum, x) in sums.iter_mut().zip(column) {
            *sum += x;
        }
    }
}

avx2_dispatch! {
    /// `z ← tanh(z + bias)` per column: the activation of a hidden layer, with tanh in
    /// f32 when the products are (its result feeds an f32 product anyway).
    fn add_bias_and_tanh => add_bias_and_tanh_impl(z: &mut [f64], bias: &[f64], precision: Precision)
}

#[inline(always)]
fn add_bias_and_tanh_impl(z: &mut [f64], bias: &[f64], precision: Precision) {
    for column in z.chunks_exact_mut(bias.len()) {
        match precision {
            Precision::Double => {
                for (value, b) in column.iter_mut().zip(bias) {
                    *value = tanh(*value + b);
                }
            }
            Precision::Single => {
                for (value, b) in column.iter_mut().zip(bias) {
                    *value = f64::from(tanh_f32((*value + b) as f32));
                }
            }
        }
    }
}

avx2_dispatch! {
    /// `tangent ⊙= 1 − h²`, the derivative of tanh expressed through its output `h`.
    fn multiply_by_tanh_derivative => multiply_by_tanh_derivative_impl(tangent: &mut [f64], activation: &[f64])
}

#[inline(always)]
fn multiply_by_tanh_derivative_impl(tangent: &mut [f64], activation: &[f64]) {
    for (t, h) in tangent.iter_mut().zip(activation) {
        *t *= 1.0 - h * h;
    }
}

/// tanh(x) within a few ulp of the correctly rounded value, branch-free so loops over it
/// vectorise (libm's `tanh` was over a third of an update's time). Computed as
/// `tanh|x| = −t / (t + 2)` with `t = expm1(−2|x|)`: `expm1` by range reduction
/// `−2|x| = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-13 Taylor polynomial for `expm1(r)`
/// (truncation < 1e-17 relative) and `expm1 = 2ᵏ·(expm1(r) + 1) − 1`. |x| is capped at 22,
/// where tanh is 1 in f64; NaN propagates.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000); // ln 2 to 32 bits (fdlibm)
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76); // ln 2 − LN2_HI
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵², rounds to an integer when added
    const SHIFTER_BITS: i64 = 0x4338_0000_0000_0000;
    let a = x.abs();
    let a = if a > 22.0 { 22.0 } else { a };
    let y = -2.0 * a;
    let shifted = y * std::f64::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER; // round(y / ln 2), in [−64, 0]
    let r = (y - k * LN2_HI) - k * LN2_LO;
    // 1/13!, 1/12!, …, 1/1! (Horner from the highest degree).
    const INVERSE_FACTORIALS: [f64; 13] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
    ];
    let mut p = 0.0;
    for c in INVERSE_FACTORIALS {
        p = p * r + c;
    }
    let expm1_r = p * r;
    let k_int = (shifted.to_bits() as i64).wrapping_sub(SHIFTER_BITS);
    let scale = f64::from_bits((k_int.wrapping_add(1023) as u64) << 52); // 2ᵏ
    let t = scale * expm1_r + (scale - 1.0);
    (-t / (t + 2.0)).copysign(x)
}

/// tanh(x) in f32 within a few ulp, branch-free, the single-precision sibling of [`tanh`]:
/// the same `tanh|x| = −t / (t + 2)`, `t = expm1(−2|x|)` with range reduction, a degree-8
/// Taylor polynomial for `expm1(r)` (truncation < 1e-9 relative for |r| ≤ ln 2 / 2), |x|
/// capped at 9 where tanh is 1 in f32; NaN propagates.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // ln 2 with 9 significant bits (cephes), exact k·LN2_HI
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2²³, rounds to an integer when added
    const SHIFTER_BITS: i32 = 0x4B40_0000;
    let a = x.abs();
    let a = if a > 9.0 { 9.0 } else { a };
    let y = -2.0 * a;
    let shifted = y * std::f32::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER; // round(y / ln 2), in [−26, 0]
    let r = (y - k * LN2_HI) - k * LN2_LO;
    // 1/8!, 1/7!, …, 1/1! (Horner from the highest degree).
    const INVERSE_FACTORIALS: [f32; 8] = [
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
    ];
    let mut p = 0.0;
    for c in INVERSE_FACTORIALS {
        p = p * r + c;
    }
    let expm1_r = p * r;
    let k_int = (shifted.to_bits() as i32).wrapping_sub(SHIFTER_BITS);
    let scale = f32::from_bits((k_int.wrapping_add(127) as u32) << 23); // 2ᵏ
    let t = scale * expm1_r + (scale - 1.0);
    (-t / (t + 2.0)).copysign(x)
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
    use rand::{Rng, SeedableRng};
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

    /// Both fast tanh versions against libm's f64 tanh: ≤ 3 ulp in f64, ≤ 4 ulp in f32
    /// (against the correctly rounded f32 of the f64 result), over small, large, tiny and
    /// range-reduction-boundary arguments, plus the special values.
    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_libm() {
        let ulps64 = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
        let ulps32 = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut worst64, mut worst32) = (0, 0);
        let samples = (0..200_000)
            .map(|i| {
                let magnitude = match i % 5 {
                    0 => rng.random_range(0.0..1.0),
                    1 => rng.random_range(0.0..25.0),
                    2 => 10f64.powf(rng.random_range(-300.0..0.0)),
                    3 => 10f64.powf(rng.random_range(-38.0..0.0)),
                    _ => rng.random_range(0.3..0.4),
                };
                if i % 2 == 0 { magnitude } else { -magnitude }
            })
            .chain([
                0.0,
                -0.0,
                9.0,
                22.0,
                1e300,
                -1e300,
                5e-324,
                f64::MIN_POSITIVE,
            ]);
        for x in samples {
            let (fast, exact) = (tanh(x), x.tanh());
            worst64 = worst64.max(ulps64(fast, exact));
            assert!(
                ulps64(fast, exact) <= 3,
                "tanh({x:e}) = {fast:e}, libm {exact:e}"
            );
            let x32 = x as f32;
            let (fast, exact) = (tanh_f32(x32), (f64::from(x32)).tanh() as f32);
            worst32 = worst32.max(ulps32(fast, exact));
            assert!(
                ulps32(fast, exact) <= 4,
                "tanh_f32({x32:e}) = {fast:e}, libm {exact:e}"
            );
        }
        assert!(worst64 >= 1 && worst32 >= 1, "suspiciously exact");
        assert_eq!((tanh(f64::INFINITY), tanh(f64::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!(
            (tanh_f32(f32::INFINITY), tanh_f32(f32::NEG_INFINITY)),
            (1.0, -1.0)
        );
        assert!(tanh(f64::NAN).is_nan() && tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// Each product against nalgebra's f64 product: to 1e-12 relative in double precision;
    /// in single precision (blocked shapes only; thin ones stay f64) within a worst-case f32
    /// rounding bound, 1e-7 × inner dimension × max(1, |result|).
    #[test]
    fn thin_and_blocked_products_agree_with_plain_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let shapes = [
            (64, 3, 50),
            (1, 64, 50),
            (3, 1, 7),
            (64, 64, 3),
            (8, 7, 9),
            (5, 5, 5),
            (64, 64, 300),
        ];
        for (precision, (out, inp, n)) in [Precision::Double, Precision::Single]
            .into_iter()
            .flat_map(|p| shapes.map(|shape| (p, shape)))
        {
            let w: Vec<f64> = (0..out * inp).map(|_| standard_normal(&mut rng)).collect();
            let h: Vec<f64> = (0..inp * n).map(|_| standard_normal(&mut rng)).collect();
            let u: Vec<f64> = (0..out * n).map(|_| standard_normal(&mut rng)).collect();
            let wm = DMatrix::from_row_slice(out, inp, &w);
            let hm = DMatrix::from_column_slice(inp, n, &h);
            let um = DMatrix::from_column_slice(out, n, &u);
            let check = |actual: &[f64], expected: &DMatrix<f64>, inner: usize| {
                let single = precision == Precision::Single && blocked(out, inp, n);
                for (a, e) in actual.iter().zip(expected.iter()) {
                    let error = (a - e).abs();
                    let allowed = match single {
                        true => 1e-7 * inner as f64 * e.abs().max(1.0),
                        false => 1e-12 * e.abs().max(1e-300),
                    };
                    assert!(
                        error <= allowed,
                        "{precision:?} {out}×{inp}×{n}: {a} vs {e}"
                    );
                }
            };
            let mut scratch = Vec::new();
            let mut z = vec![1.0; out * n];
            affine_product(
                &mut z,
                &w,
                h[..].into(),
                (out, inp, n),
                true,
                precision,
                &mut scratch,
            );
            check(&z, &(&wm * &hm + DMatrix::from_element(out, n, 1.0)), inp);
            let mut g = vec![7.0; out * inp];
            weight_gradient(
                &mut g,
                &u,
                h[..].into(),
                (out, inp, n),
                precision,
                &mut scratch,
            );
            // Row-major out × in.
            check(&g, &(&um * hm.transpose()).transpose(), n);
            let mut x = vec![7.0; inp * n];
            transpose_product(&mut x, &w, &u, (out, inp, n), precision, &mut scratch);
            check(&x, &(wm.transpose() * &um), out);
        }
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
