//! The matrix products of the MLP's passes in the flat parameter layout: `W·H` (forward
//! and JVP), `U·Hᵀ` (weight gradients) and `Wᵀ·U` (input gradients). Large shapes go to
//! `matrixmultiply` through nalgebra, in f32 or f64 ([`Precision`]); thin ones (the input
//! and output layers) to loops over contiguous memory, always in f64.

use std::cell::RefCell;

use nalgebra::{DMatrixViewMut, Dyn, MatrixView, Scalar};

use super::Precision;
use super::convert::{from_single, single_values};

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
pub(crate) fn blocked(m: usize, k: usize, n: usize) -> bool {
    m.min(k).min(n) >= BLOCKED_GEMM_MIN_DIM
}

/// A matrix's values, with their f32 copy when the caller keeps one (see
/// [`crate::trpo::mlp::ForwardCache`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatrixValues<'a> {
    /// The values, f64.
    pub(crate) double: &'a [f64],
    /// Their f32 copy, when the caller keeps one.
    pub(crate) single: Option<&'a [f32]>,
}

impl<'a> From<&'a [f64]> for MatrixValues<'a> {
    fn from(double: &'a [f64]) -> Self {
        MatrixValues {
            double,
            single: None,
        }
    }
}

/// One factor of a [`blocked_gemm`] product: a matrix read out of a slice with strides.
#[derive(Clone, Copy, Debug)]
struct StridedMatrix<'a> {
    values: MatrixValues<'a>,
    /// (rows, columns).
    shape: (usize, usize),
    /// (row stride, column stride), in elements.
    strides: (usize, usize),
}

impl<'a> StridedMatrix<'a> {
    fn new(values: MatrixValues<'a>, shape: (usize, usize), strides: (usize, usize)) -> Self {
        StridedMatrix {
            values,
            shape,
            strides,
        }
    }
}

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
    a: StridedMatrix<'_>,
    b: StridedMatrix<'_>,
    accumulate: bool,
    precision: Precision,
) {
    if precision == Precision::Double {
        let mut product = DMatrixViewMut::from_slice(c, rows, cols);
        let beta = if accumulate { 1.0 } else { 0.0 };
        product.gemm(
            1.0,
            &strided(a.values.double, a.shape, a.strides),
            &strided(b.values.double, b.shape, b.strides),
            beta,
        );
        return;
    }
    SINGLE_PRECISION_SCRATCH.with_borrow_mut(|[a32, b32, c32]| {
        // Sized without clearing: every element is overwritten below (β = 0 never reads C).
        let (a32, b32) = (single_values(a.values, a32), single_values(b.values, b32));
        c32.resize(rows * cols, 0.0);
        let c32 = &mut c32[..rows * cols];
        let mut product = DMatrixViewMut::from_slice(c32, rows, cols);
        product.gemm(
            1.0,
            &strided(a32, a.shape, a.strides),
            &strided(b32, b.shape, b.strides),
            0.0,
        );
        from_single(c, c32, accumulate);
    });
}

avx2_dispatch! {
    /// `z = W·H` (or `z += W·H` when `accumulate`), `W` row-major `out × in` in `w`, `H` and
    /// `z` column-major (`in × n`, `out × n`).
    pub(crate) fn affine_product => affine_product_impl(z: &mut [f64], w: &[f64], h: MatrixValues<'_>, dims: (usize, usize, usize), accumulate: bool, precision: Precision, scratch: &mut Vec<f64>)
}

#[inline(always)]
fn affine_product_impl(
    z: &mut [f64],
    w: &[f64],
    h: MatrixValues<'_>,
    (out, inp, n): (usize, usize, usize),
    accumulate: bool,
    precision: Precision,
    scratch: &mut Vec<f64>,
) {
    if blocked(out, inp, n) {
        blocked_gemm(
            z,
            (out, n),
            StridedMatrix::new(w.into(), (out, inp), (inp, 1)),
            StridedMatrix::new(h, (inp, n), (1, inp)),
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
    pub(crate) fn weight_gradient => weight_gradient_impl(g: &mut [f64], u: &[f64], h: MatrixValues<'_>, dims: (usize, usize, usize), precision: Precision, scratch: &mut Vec<f64>)
}

#[inline(always)]
fn weight_gradient_impl(
    g: &mut [f64],
    u: &[f64],
    h: MatrixValues<'_>,
    (out, inp, n): (usize, usize, usize),
    precision: Precision,
    scratch: &mut Vec<f64>,
) {
    if blocked(out, inp, n) {
        // Row-major `out × in` is column-major `in × out`: gᵀ = H·Uᵀ.
        blocked_gemm(
            g,
            (inp, out),
            StridedMatrix::new(h, (inp, n), (1, inp)),
            StridedMatrix::new(u.into(), (n, out), (out, 1)),
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
    pub(crate) fn transpose_product => transpose_product_impl(x: &mut [f64], w: &[f64], u: &[f64], dims: (usize, usize, usize), precision: Precision, scratch: &mut Vec<f64>)
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
            StridedMatrix::new(w.into(), (inp, out), (1, inp)),
            StridedMatrix::new(u.into(), (out, n), (1, out)),
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

#[cfg(test)]
mod tests {
    use nalgebra::DMatrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::trpo::mlp::standard_normal;

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
}
