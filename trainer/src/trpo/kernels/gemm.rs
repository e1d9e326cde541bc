//! The matrix products of the MLP's passes in the flat parameter layout: `W·H` (forward
//! and JVP), `U·Hᵀ` (weight gradients) and `Wᵀ·U` (input gradients), in the pass's scalar
//! ([`Real`]). Large shapes go to `matrixmultiply` through nalgebra, or in f32 on CPUs with
//! AVX-512F to [`super::register_tiles`] (the same values bit for bit, without the
//! packing); thin ones (the input and output layers) to loops over contiguous memory.

use nalgebra::{DMatrixViewMut, Dyn, MatrixView};

use super::Real;
use super::register_tiles::{Columns, Elements, ProductShape};

/// A `rows × cols` view of `data` with the given (row, column) strides.
fn strided<T: Real>(
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

/// One factor of a [`blocked_gemm`] product: a matrix read out of a slice with strides.
#[derive(Clone, Copy, Debug)]
struct StridedMatrix<'a, T> {
    values: &'a [T],
    /// (rows, columns).
    shape: (usize, usize),
    /// (row stride, column stride), in elements.
    strides: (usize, usize),
}

impl<'a, T> StridedMatrix<'a, T> {
    fn new(values: &'a [T], shape: (usize, usize), strides: (usize, usize)) -> Self {
        StridedMatrix {
            values,
            shape,
            strides,
        }
    }
}

/// `c = a·b` (or `c += a·b` when `accumulate`), `c` column-major `rows × cols`, by
/// `matrixmultiply`.
fn blocked_gemm<T: Real>(
    c: &mut [T],
    (rows, cols): (usize, usize),
    a: StridedMatrix<'_, T>,
    b: StridedMatrix<'_, T>,
    accumulate: bool,
) {
    let mut product = DMatrixViewMut::from_slice(c, rows, cols);
    let beta = if accumulate { T::ONE } else { T::ZERO };
    product.gemm(
        T::ONE,
        &strided(a.values, a.shape, a.strides),
        &strided(b.values, b.shape, b.strides),
        beta,
    );
}

vector_dispatch! {
    /// `z = W·H` (or `z += W·H` when `accumulate`), `W` row-major `out × in` in `w`, `H` and
    /// `z` column-major (`in × n`, `out × n`).
    pub(crate) fn affine_product<T: Real> => affine_product_impl(z: &mut [T], w: &[T], h: &[T], dims: (usize, usize, usize), accumulate: bool, scratch: &mut Vec<T>)
}

#[inline(always)]
fn affine_product_impl<T: Real>(
    z: &mut [T],
    w: &[T],
    h: &[T],
    (out, inp, n): (usize, usize, usize),
    accumulate: bool,
    scratch: &mut Vec<T>,
) {
    if blocked(out, inp, n) {
        if T::has_tiled_product() {
            // z = Σₚ W[:, p]·H[p, :]: W's columns made contiguous (16 KB for 64×64).
            let wt = transpose_into(scratch, w, out, inp);
            let a = Columns::new(wt, out);
            let b = Elements::new(h, 1, inp);
            if T::tiled_product(z, a, b, ProductShape::new(out, inp, n), accumulate) {
                return;
            }
        }
        blocked_gemm(
            z,
            (out, n),
            StridedMatrix::new(w, (out, inp), (inp, 1)),
            StridedMatrix::new(h, (inp, n), (1, inp)),
            accumulate,
        );
        return;
    }
    if inp >= out {
        // One dot product of length `in` per output.
        for (zj, hj) in z.chunks_exact_mut(out).zip(h.chunks_exact(inp)) {
            for (value, row) in zj.iter_mut().zip(w.chunks_exact(inp)) {
                let product = dot(row, hj);
                *value = if accumulate {
                    *value + product
                } else {
                    product
                };
            }
        }
    } else {
        // Wide output: a linear combination of W's columns (transposed into `scratch` once).
        let wt = transpose_into(scratch, w, out, inp);
        for (zj, hj) in z.chunks_exact_mut(out).zip(h.chunks_exact(inp)) {
            combine_columns(zj, wt.chunks_exact(out).zip(hj), accumulate);
        }
    }
}

vector_dispatch! {
    /// `g = U·Hᵀ` (overwritten) with `g` row-major `out × in` (a weight gradient), `U`
    /// column-major `out × n`, `H` column-major `in × n`.
    pub(crate) fn weight_gradient<T: Real> => weight_gradient_impl(g: &mut [T], u: &[T], h: &[T], dims: (usize, usize, usize), scratch: &mut Vec<T>)
}

#[inline(always)]
fn weight_gradient_impl<T: Real>(
    g: &mut [T],
    u: &[T],
    h: &[T],
    (out, inp, n): (usize, usize, usize),
    scratch: &mut Vec<T>,
) {
    if blocked(out, inp, n) {
        if tiled_weight_gradient(g, u, h, (out, inp, n), scratch) {
            return;
        }
        // Row-major `out × in` is column-major `in × out`: gᵀ = H·Uᵀ.
        blocked_gemm(
            g,
            (inp, out),
            StridedMatrix::new(h, (inp, n), (1, inp)),
            StridedMatrix::new(u, (n, out), (out, 1)),
            false,
        );
        return;
    }
    g.fill(T::ZERO);
    if inp >= out {
        for (uj, hj) in u.chunks_exact(out).zip(h.chunks_exact(inp)) {
            for (row, &s) in g.chunks_exact_mut(inp).zip(uj) {
                axpy(row, s, hj);
            }
        }
    } else {
        // Accumulate column-major (contiguous over the wide `out`), then transpose.
        scratch.clear();
        scratch.resize(out * inp, T::ZERO);
        for (uj, hj) in u.chunks_exact(out).zip(h.chunks_exact(inp)) {
            for (column, &s) in scratch.chunks_exact_mut(out).zip(hj) {
                axpy(column, s, uj);
            }
        }
        transpose(g, scratch, inp, out);
    }
}

/// [`weight_gradient`] by [`super::register_tiles`], when it runs for this scalar and CPU
/// (false: nothing written). Each element is `Σⱼ U[o, j]·H[i, j]` over the samples in order
/// either way round, so both layouts give `matrixmultiply`'s values.
#[inline(always)]
fn tiled_weight_gradient<T: Real>(
    g: &mut [T],
    u: &[T],
    h: &[T],
    (out, inp, n): (usize, usize, usize),
    scratch: &mut Vec<T>,
) -> bool {
    if !T::has_tiled_product() {
        return false;
    }
    if inp >= TILED_MIN_ROWS || inp >= out {
        // Row-major `out × in` is column-major `in × out`: gᵀ = H·Uᵀ = Σⱼ H[:, j]·U[:, j]ᵀ.
        let a = Columns::new(h, inp);
        let b = Elements::new(u, out, 1);
        return T::tiled_product(g, a, b, ProductShape::new(inp, n, out), false);
    }
    // A thin input (the first layer's few observations) would fill a fraction of a vector
    // register as gᵀ's rows: tile g = Σⱼ U[:, j]·H[:, j]ᵀ column-major instead (rows over
    // the wide `out`), then transpose it (a few hundred elements).
    let a = Columns::new(u, out);
    let b = Elements::new(h, inp, 1);
    scratch.clear();
    scratch.resize(out * inp, T::ZERO);
    if !T::tiled_product(scratch, a, b, ProductShape::new(out, n, inp), false) {
        return false;
    }
    // Column-major `out × in` is row-major `in × out`.
    transpose(g, scratch, inp, out);
    true
}

/// Fewest result rows for which [`tiled_weight_gradient`] tiles `gᵀ` directly (one vector
/// register of f32); thinner inputs tile `g` and transpose it.
const TILED_MIN_ROWS: usize = 16;

vector_dispatch! {
    /// `x = Wᵀ·U` (overwritten), `W` row-major `out × in`, `U` column-major `out × n`, `x`
    /// column-major `in × n`: the gradient with respect to a layer's inputs.
    pub(crate) fn transpose_product<T: Real> => transpose_product_impl(x: &mut [T], w: &[T], u: &[T], dims: (usize, usize, usize), scratch: &mut Vec<T>)
}

#[inline(always)]
fn transpose_product_impl<T: Real>(
    x: &mut [T],
    w: &[T],
    u: &[T],
    (out, inp, n): (usize, usize, usize),
    scratch: &mut Vec<T>,
) {
    if blocked(out, inp, n) {
        // x = Σₚ W[p, :]ᵀ·U[p, :], W's rows contiguous already.
        let a = Columns::new(w, inp);
        let b = Elements::new(u, 1, out);
        if T::tiled_product(x, a, b, ProductShape::new(inp, out, n), false) {
            return;
        }
        // Row-major `W` read as column-major is `Wᵀ` (`in × out`).
        blocked_gemm(
            x,
            (inp, n),
            StridedMatrix::new(w, (inp, out), (1, inp)),
            StridedMatrix::new(u, (out, n), (1, out)),
            false,
        );
        return;
    }
    if inp >= out {
        for (xj, uj) in x.chunks_exact_mut(inp).zip(u.chunks_exact(out)) {
            combine_columns(xj, w.chunks_exact(inp).zip(uj), false);
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
fn transpose_into<'a, T: Real>(
    buffer: &'a mut Vec<T>,
    w: &[T],
    rows: usize,
    cols: usize,
) -> &'a [T] {
    buffer.clear();
    buffer.resize(rows * cols, T::ZERO);
    transpose(buffer, w, rows, cols);
    buffer
}

/// `target` (column-major `rows × cols`) = `source` (row-major `rows × cols`).
fn transpose<T: Real>(target: &mut [T], source: &[T], rows: usize, cols: usize) {
    // Indexed loops, not an iterator chain: `extend` over a `flat_map` ran element by
    // element with a capacity check each.
    for (c, column) in target.chunks_exact_mut(rows).take(cols).enumerate() {
        for (value, row) in column.iter_mut().zip(source.chunks_exact(cols)) {
            *value = row[c];
        }
    }
}

/// `y = Σ sᵢ·xᵢ` over `(xᵢ, sᵢ)` in order (`y += …` when `accumulate`), without a separate
/// zeroing pass.
#[inline(always)]
fn combine_columns<'a, T: Real + 'a>(
    y: &mut [T],
    mut terms: impl Iterator<Item = (&'a [T], &'a T)>,
    accumulate: bool,
) {
    if !accumulate {
        match terms.next() {
            Some((x, &s)) => {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = s * x;
                }
            }
            None => y.fill(T::ZERO),
        }
    }
    for (x, &s) in terms {
        axpy(y, s, x);
    }
}

/// `y += a·x`.
#[inline(always)]
fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `x·y` with four independent accumulators (so the additions pipeline and vectorise).
#[inline(always)]
fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::ZERO; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let mut tail = T::ZERO;
    for (&a, &b) in xc.remainder().iter().zip(yc.remainder()) {
        tail += a * b;
    }
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

    /// The three products of one shape in `T`, against nalgebra's f64 products of the same
    /// (rounded) inputs; `allowed(inner, expected)` bounds the error.
    fn check_shape<T: Real>(
        (out, inp, n): (usize, usize, usize),
        rng: &mut ChaCha8Rng,
        allowed: impl Fn(usize, f64) -> f64,
    ) {
        let mut random =
            |len: usize| -> Vec<T> { (0..len).map(|_| T::narrow(standard_normal(rng))).collect() };
        let (w, h, u) = (random(out * inp), random(inp * n), random(out * n));
        let wide = |v: &[T]| v.iter().map(|x| x.widen()).collect::<Vec<_>>();
        let wm = DMatrix::from_row_slice(out, inp, &wide(&w));
        let hm = DMatrix::from_column_slice(inp, n, &wide(&h));
        let um = DMatrix::from_column_slice(out, n, &wide(&u));
        let check = |actual: &[T], expected: &DMatrix<f64>, inner: usize| {
            for (a, e) in actual.iter().zip(expected.iter()) {
                let error = (a.widen() - e).abs();
                assert!(error <= allowed(inner, *e), "{out}×{inp}×{n}: {a} vs {e}");
            }
        };
        let mut scratch = Vec::new();
        let mut z = vec![T::ONE; out * n];
        affine_product(&mut z, &w, &h, (out, inp, n), true, &mut scratch);
        check(&z, &(&wm * &hm + DMatrix::from_element(out, n, 1.0)), inp);
        let mut g = vec![T::narrow(7.0); out * inp];
        weight_gradient(&mut g, &u, &h, (out, inp, n), &mut scratch);
        // Row-major out × in.
        check(&g, &(&um * hm.transpose()).transpose(), n);
        let mut x = vec![T::narrow(7.0); inp * n];
        transpose_product(&mut x, &w, &u, (out, inp, n), &mut scratch);
        check(&x, &(wm.transpose() * &um), out);
    }

    /// Each product, thin and blocked, against nalgebra's f64 product: to 1e-12 relative in
    /// f64; in f32 within a worst-case rounding bound, 1e-7 × inner dimension ×
    /// max(1, |result|).
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
        for shape in shapes {
            check_shape::<f64>(shape, &mut rng, |_, e| 1e-12 * e.abs().max(1e-300));
            check_shape::<f32>(shape, &mut rng, |inner, e| {
                1e-7 * inner as f64 * e.abs().max(1.0)
            });
        }
    }

    /// The three products of one blocked f32 shape by `matrixmultiply` (through nalgebra)
    /// and by the dispatched kernels (the register tiles on CPUs with AVX-512F), compared
    /// bit for bit: overwriting and accumulating, `c` holding values beforehand.
    fn compare_with_matrixmultiply(
        (out, inp, n): (usize, usize, usize),
        rng: &mut ChaCha8Rng,
    ) -> Result<(), String> {
        let mut random =
            |len: usize| -> Vec<f32> { (0..len).map(|_| standard_normal(rng) as f32).collect() };
        let (w, h, u, start) = (
            random(out * inp),
            random(inp * n),
            random(out * n),
            random(out * n),
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let same =
            |what: &str, actual: &[f32], expected: &[f32]| match bits(actual) == bits(expected) {
                true => Ok(()),
                false => Err(format!(
                    "{what} of {out}×{inp}×{n} differs from matrixmultiply's"
                )),
            };
        let mut scratch = Vec::new();
        for accumulate in [false, true] {
            let mut expected = start.clone();
            blocked_gemm(
                &mut expected,
                (out, n),
                StridedMatrix::new(&w, (out, inp), (inp, 1)),
                StridedMatrix::new(&h, (inp, n), (1, inp)),
                accumulate,
            );
            let mut z = start.clone();
            affine_product(&mut z, &w, &h, (out, inp, n), accumulate, &mut scratch);
            same("W·H", &z, &expected)?;
        }
        let mut expected = vec![0.0; out * inp];
        blocked_gemm(
            &mut expected,
            (inp, out),
            StridedMatrix::new(&h, (inp, n), (1, inp)),
            StridedMatrix::new(&u, (n, out), (out, 1)),
            false,
        );
        let mut g = vec![7.0; out * inp];
        weight_gradient(&mut g, &u, &h, (out, inp, n), &mut scratch);
        same("U·Hᵀ", &g, &expected)?;
        let mut expected = vec![0.0; inp * n];
        blocked_gemm(
            &mut expected,
            (inp, n),
            StridedMatrix::new(&w, (inp, out), (1, inp)),
            StridedMatrix::new(&u, (out, n), (1, out)),
            false,
        );
        let mut x = vec![7.0; inp * n];
        transpose_product(&mut x, &w, &u, (out, inp, n), &mut scratch);
        same("Wᵀ·U", &x, &expected)
    }

    /// The learner's values must not depend on which kernel ran (the shipped runs'
    /// `policy.bin` bytes are pinned in the README): the MLP's shapes (64 × 6 and 64 × 64
    /// layers over minibatches and whole batches, whose weight gradients sum over several
    /// of `matrixmultiply`'s 256-step blocks) and shapes off every tile edge.
    #[test]
    fn blocked_f32_products_are_matrixmultiplys_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let shapes = [
            (64, 6, 128),
            (64, 64, 128),
            (64, 64, 2000),
            (6, 64, 257),
            (64, 6, 513),
            (17, 33, 255),
            (65, 7, 6),
            (6, 6, 6),
            (80, 100, 37),
            (16, 16, 1030),
        ];
        for shape in shapes {
            compare_with_matrixmultiply(shape, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

        /// As above over random blocked shapes.
        #[test]
        fn random_blocked_f32_products_are_matrixmultiplys_bit_for_bit(
            shape in (6usize..=70, 6usize..=70, 6usize..=600),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let outcome = compare_with_matrixmultiply(shape, &mut rng);
            proptest::prop_assert!(outcome.is_ok(), "{:?}", outcome);
        }
    }
}
