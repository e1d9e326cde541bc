//! f32 matrix products register-tiled with AVX-512F, for the MLP's shapes: weights of
//! 64×64 (16 KB, L1-resident) against 128 to 20 000 sample columns.
//!
//! `matrixmultiply` packs both factors into its own panels on every call; on these shapes
//! (a value-fit minibatch half is 64×64 by 64×128) the packing cost half as much as the
//! multiply itself. The three products of a pass (`W·H`, `Wᵀ·U`, `H·Uᵀ`) all read one
//! factor as contiguous columns already (or after a 16 KB transpose of `W`), and the other
//! one element at a time (a broadcast), so no packing is needed: each tile keeps up to
//! 64 rows × 4 columns of the result in 16 vector registers and adds one outer product per
//! step of the inner dimension, `c[:, j] += a_p · b(p, j)`, with fused multiply-adds.
//!
//! The results are `matrixmultiply`'s bit for bit, so the learner computes the same values
//! with either (the shipped runs' numbers stay reproducible): its AVX-512 (and FMA) kernels
//! sum each element's products over blocks of [`MATRIXMULTIPLY_KC`] steps of the inner
//! dimension, each block in one fused multiply-add chain from zero in the order p = 0, 1,
//! …, and add each block's sum to the element (or, for the first block of an overwriting
//! product, store it). This kernel does exactly that; the tests compare the two bit for bit.

/// `matrixmultiply`'s f32 inner-dimension block (its `S_KC`, 256 unless its build was
/// configured otherwise): the block boundaries decide where each element's sum rounds.
pub(crate) const MATRIXMULTIPLY_KC: usize = 256;

/// One factor read as columns: column `p` is `values[p·stride .. p·stride + rows]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Columns<'a, T> {
    /// The elements.
    pub values: &'a [T],
    /// Elements between the starts of consecutive columns (≥ the number of rows).
    pub stride: usize,
}

impl<'a, T> Columns<'a, T> {
    pub fn new(values: &'a [T], stride: usize) -> Self {
        Self { values, stride }
    }
}

/// The other factor read element by element: element `(p, j)` is
/// `values[p·step + j·column_step]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Elements<'a, T> {
    /// The elements.
    pub values: &'a [T],
    /// Elements between `(p, j)` and `(p + 1, j)`.
    pub step: usize,
    /// Elements between `(p, j)` and `(p, j + 1)`.
    pub column_step: usize,
}

impl<'a, T> Elements<'a, T> {
    pub fn new(values: &'a [T], step: usize, column_step: usize) -> Self {
        Self {
            values,
            step,
            column_step,
        }
    }
}

/// Dimensions of `c = a·b`: `c` is `rows × columns`, the inner dimension is `inner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProductShape {
    pub rows: usize,
    pub inner: usize,
    pub columns: usize,
}

impl ProductShape {
    pub fn new(rows: usize, inner: usize, columns: usize) -> Self {
        Self {
            rows,
            inner,
            columns,
        }
    }
}

/// Whether [`product`] runs on this CPU (x86-64 with AVX-512F).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = Σₚ aₚ·b(p, ·)ᵀ` (or `c += …` when `accumulate`): `c` column-major
/// `rows × columns` (leading dimension `rows`), `aₚ` the columns of `a` (`rows` long),
/// `b(p, j)` the elements of `b`. Returns false, touching nothing, when the CPU lacks
/// AVX-512F (then the caller takes its portable path).
///
/// # Panics
/// When a slice is shorter than the shape and strides need (a caller's bug).
pub(crate) fn product(
    c: &mut [f32],
    a: Columns<'_, f32>,
    b: Elements<'_, f32>,
    shape: ProductShape,
    accumulate: bool,
) -> bool {
    let ProductShape {
        rows,
        inner,
        columns,
    } = shape;
    if rows == 0 || columns == 0 {
        return true;
    }
    assert!(c.len() >= rows * columns, "product: c too short");
    if inner > 0 {
        assert!(a.stride >= rows, "product: a's columns overlap");
        assert!(
            a.values.len() >= (inner - 1) * a.stride + rows,
            "product: a too short"
        );
        assert!(
            b.values.len() > (inner - 1) * b.step + (columns - 1) * b.column_step,
            "product: b too short"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present (checked just above), and every index the kernel
        // forms is within the slices: the asserts above bound the largest of each factor's
        // (`(inner − 1)·stride + rows − 1` for `a`, `(inner − 1)·step + (columns −
        // 1)·column_step` for `b`, `rows·columns − 1` for `c`), and the kernel's masked
        // loads and stores touch no row at or past `rows`.
        unsafe { avx512::product(c, a, b, shape, accumulate) };
        return true;
    }
    let _ = accumulate;
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Columns, Elements, ProductShape};

    /// f32 lanes of a vector register.
    const LANES: usize = 16;
    /// Most vector registers of rows in one tile (64 rows: a [64, 64] layer in one pass).
    const MAX_ROW_REGISTERS: usize = 4;
    /// Result columns per tile: 4 × 4 accumulators plus 4 of `a` and a broadcast fit the
    /// 32 registers with room to spare.
    const TILE_COLUMNS: usize = 4;
    /// Inner-dimension block: `matrixmultiply`'s, since each block's sum is rounded into
    /// the result on its own (`a`'s block, up to 64 × 256 f32, 64 KB, mostly stays in L1
    /// and L2 while every column tile reads it; matters for `H·Uᵀ`, whose inner dimension is
    /// the batch).
    const INNER_BLOCK: usize = super::MATRIXMULTIPLY_KC;

    /// Where one tile reads and writes; pointers into the caller's slices.
    #[derive(Clone, Copy)]
    struct Tile {
        c: *mut f32,
        ldc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        b_step: usize,
        b_column_step: usize,
        inner: usize,
        /// Lanes of the last row register that are inside the matrix.
        last_mask: __mmask16,
        /// Add the block's sums to the values in `c` (else store them).
        add_to_c: bool,
    }

    /// The lane mask of row register `r` of `R`.
    #[inline(always)]
    fn mask<const R: usize>(r: usize, last: __mmask16) -> __mmask16 {
        if r + 1 == R { last } else { 0xFFFF }
    }

    /// The whole product, tile by tile.
    ///
    /// # Safety
    /// AVX-512F must be available, and the slices must hold the elements the shape and
    /// strides address (as [`super::product`] asserts).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        c: &mut [f32],
        a: Columns<'_, f32>,
        b: Elements<'_, f32>,
        shape: ProductShape,
        accumulate: bool,
    ) {
        let (rows, inner, columns) = (shape.rows, shape.inner, shape.columns);
        if inner == 0 {
            if !accumulate {
                c[..rows * columns].fill(0.0);
            }
            return;
        }
        let c_ptr = c.as_mut_ptr();
        for p0 in (0..inner).step_by(INNER_BLOCK) {
            let block = INNER_BLOCK.min(inner - p0);
            let add_to_c = accumulate || p0 > 0;
            for i0 in (0..rows).step_by(LANES * MAX_ROW_REGISTERS) {
                let tile_rows = (rows - i0).min(LANES * MAX_ROW_REGISTERS);
                let registers = tile_rows.div_ceil(LANES);
                let tail = tile_rows - (registers - 1) * LANES;
                let last_mask = if tail == LANES {
                    0xFFFF
                } else {
                    (1u16 << tail) - 1
                };
                for j0 in (0..columns).step_by(TILE_COLUMNS) {
                    // SAFETY (all offsets): i0 < rows, j0 < columns, p0 < inner; the
                    // tiles read rows i0..i0 + tile_rows ≤ rows, columns j0..j0 + width ≤
                    // columns and inner indices p0..p0 + block ≤ inner.
                    let tile = Tile {
                        c: unsafe { c_ptr.add(j0 * rows + i0) },
                        ldc: rows,
                        a: unsafe { a.values.as_ptr().add(p0 * a.stride + i0) },
                        lda: a.stride,
                        b: unsafe { b.values.as_ptr().add(p0 * b.step + j0 * b.column_step) },
                        b_step: b.step,
                        b_column_step: b.column_step,
                        inner: block,
                        last_mask,
                        add_to_c,
                    };
                    let width = (columns - j0).min(TILE_COLUMNS);
                    // SAFETY: as for `product`, within the bounds just described.
                    unsafe { dispatch_tile(tile, registers, width) };
                }
            }
        }
    }

    /// The tile kernel for `registers` row registers and `width` columns.
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch_tile(tile: Tile, registers: usize, width: usize) {
        // SAFETY: forwarded; the const parameters are the ones asked for.
        unsafe {
            match (registers, width) {
                (1, 4) => tile_kernel::<1, 4>(tile),
                (2, 4) => tile_kernel::<2, 4>(tile),
                (3, 4) => tile_kernel::<3, 4>(tile),
                (4, 4) => tile_kernel::<4, 4>(tile),
                (1, _) => narrow(tile, width, tile_kernel::<1, 1>),
                (2, _) => narrow(tile, width, tile_kernel::<2, 1>),
                (3, _) => narrow(tile, width, tile_kernel::<3, 1>),
                _ => narrow(tile, width, tile_kernel::<4, 1>),
            }
        }
    }

    /// A tile narrower than [`TILE_COLUMNS`], one column at a time.
    ///
    /// # Safety
    /// As [`tile_kernel`] for each of the `width` columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn narrow(tile: Tile, width: usize, kernel: unsafe fn(Tile)) {
        for j in 0..width {
            // SAFETY: column j < width of the tile, inside the caller's bounds.
            unsafe {
                kernel(Tile {
                    c: tile.c.add(j * tile.ldc),
                    b: tile.b.add(j * tile.b_column_step),
                    ..tile
                });
            }
        }
    }

    /// `R` row registers × `C` columns of `c`, accumulated over the tile's inner block.
    ///
    /// # Safety
    /// AVX-512F available; `c` holds `C` columns of `ldc` from `tile.c`, `a` holds `inner`
    /// columns of `lda` from `tile.a` (each at least the tile's rows long), `b` the
    /// elements `p·b_step + j·b_column_step` for p < inner, j < C. Lanes past the tile's
    /// rows are masked, never read or written.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_kernel<const R: usize, const C: usize>(tile: Tile) {
        let last = tile.last_mask;
        // Every block's sums start from zero, as `matrixmultiply`'s kernel's do.
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for p in 0..tile.inner {
            // SAFETY: column p < inner of `a`.
            let a_column = unsafe { tile.a.add(p * tile.lda) };
            let mut a = [_mm512_setzero_ps(); R];
            for (r, value) in a.iter_mut().enumerate() {
                // SAFETY: rows r·16.. of that column, masked to the tile's rows.
                *value =
                    unsafe { _mm512_maskz_loadu_ps(mask::<R>(r, last), a_column.add(r * LANES)) };
            }
            let mut b = [_mm512_setzero_ps(); C];
            for (j, value) in b.iter_mut().enumerate() {
                // SAFETY: element (p, j) of `b`, p < inner, j < C.
                *value = _mm512_set1_ps(unsafe {
                    *tile.b.add(p * tile.b_step + j * tile.b_column_step)
                });
            }
            for (row, &a) in acc.iter_mut().zip(&a) {
                for (value, &b) in row.iter_mut().zip(&b) {
                    *value = _mm512_fmadd_ps(a, b, *value);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, &sum) in row.iter().enumerate() {
                // SAFETY: rows r·16.. of column j of `c`, masked to the tile's rows.
                unsafe {
                    let at = tile.c.add(j * tile.ldc + r * LANES);
                    let value = if tile.add_to_c {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask::<R>(r, last), at), sum)
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(at, mask::<R>(r, last), value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `c (+)= a·b` by the definition, in f64, over the same strided reads as [`product`].
    fn reference(
        c: &[f32],
        a: Columns<'_, f32>,
        b: Elements<'_, f32>,
        shape: ProductShape,
        accumulate: bool,
    ) -> Vec<f64> {
        let mut expected = vec![0.0; shape.rows * shape.columns];
        for j in 0..shape.columns {
            for i in 0..shape.rows {
                let start = if accumulate {
                    f64::from(c[j * shape.rows + i])
                } else {
                    0.0
                };
                expected[j * shape.rows + i] = (0..shape.inner).fold(start, |sum, p| {
                    let x = f64::from(a.values[p * a.stride + i]);
                    sum + x * f64::from(b.values[p * b.step + j * b.column_step])
                });
            }
        }
        expected
    }

    /// Values in [−2, 2] on a 1/64 grid, so products are exact and only the sums round.
    fn grid_values(len: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec((-128i32..=128).prop_map(|k| k as f32 / 64.0), len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Against the definition over random shapes (thin ones, row counts off the
        /// 16-lane and 64-row tiles, column counts off the 4-column tile, inner dimensions
        /// across the 256 block), padded strides, both factor layouts of the MLP's
        /// products, overwriting and accumulating: within f32 rounding of the exact sum,
        /// and `c` untouched past its `rows × columns`.
        #[test]
        fn tiled_product_matches_the_definition(
            (rows, inner, columns) in (1usize..=80, 0usize..=600, 1usize..=11),
            (a_pad, b_pad) in (0usize..3, 0usize..3),
            b_rows_contiguous in any::<bool>(),
            accumulate in any::<bool>(),
            seed_values in grid_values(80 * 603 + 603 * 14 + 2 * 80 * 11),
        ) {
            let stride = rows + a_pad;
            let a_len = inner.saturating_sub(1) * stride + rows;
            let (step, column_step) = if b_rows_contiguous {
                (1, inner + b_pad)
            } else {
                (columns + b_pad, 1)
            };
            let b_len = inner.saturating_sub(1) * step + (columns - 1) * column_step + 1;
            let (a_values, rest) = seed_values.split_at(a_len);
            let (b_values, rest) = rest.split_at(b_len);
            let c_len = rows * columns;
            let mut c: Vec<f32> = rest[..c_len].to_vec();
            c.extend([7.0; 3]); // past the result: must stay as it is
            let a = Columns { values: a_values, stride };
            let b = Elements { values: b_values, step, column_step };
            let shape = ProductShape { rows, inner, columns };
            let before = c.clone();
            let expected = reference(&c, a, b, shape, accumulate);
            let ran = product(&mut c, a, b, shape, accumulate);
            prop_assert_eq!(ran, available());
            if !ran {
                prop_assert_eq!(&c, &before);
                return Ok(());
            }
            // Each term is exact; the sum of `inner + 1` terms of magnitude ≤ 4 rounds by
            // at most `inner + 1` half-ulps of its largest partial sum.
            let bound = |e: f64| (inner as f64 + 1.0) * 4.0 * (inner as f64 + 1.0) * f64::from(f32::EPSILON) + 1e-6 * e.abs();
            for (index, (&actual, &e)) in c[..c_len].iter().zip(&expected).enumerate() {
                prop_assert!(
                    (f64::from(actual) - e).abs() <= bound(e),
                    "{rows}×{inner}×{columns} at {index}: {actual} vs {e}"
                );
            }
            prop_assert_eq!(&c[c_len..], &[7.0; 3]);
        }
    }
}
