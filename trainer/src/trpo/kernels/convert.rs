//! f64 ↔ f32 copies around the single-precision products.

use super::gemm::MatrixValues;

/// `values` in f32: the caller's copy when it has one, else converted into `buffer`.
pub(crate) fn single_values<'a>(values: MatrixValues<'a>, buffer: &'a mut Vec<f32>) -> &'a [f32] {
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
    pub(crate) fn to_single => to_single_impl(single: &mut [f32], double: &[f64])
}

#[inline(always)]
fn to_single_impl(single: &mut [f32], double: &[f64]) {
    for (s, &d) in single.iter_mut().zip(double) {
        *s = d as f32;
    }
}

avx2_dispatch! {
    /// `double = single` (or `double += single` when `accumulate`) element-wise.
    pub(crate) fn from_single => from_single_impl(double: &mut [f64], single: &[f32], accumulate: bool)
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
