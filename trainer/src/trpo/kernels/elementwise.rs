//! Element-wise passes over a batch (column-major, one sample per column): adding a
//! layer's bias, its tanh activation, and the tanh derivative `1 − h²`.

use super::Precision;
use super::tanh::{tanh, tanh_f32};

avx2_dispatch! {
    /// Adds `bias` (one per row) to every column of the column-major `z`.
    pub(crate) fn add_bias => add_bias_impl(z: &mut [f64], bias: &[f64])
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
    pub(crate) fn row_sums => row_sums_impl(sums: &mut [f64], u: &[f64])
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
    pub(crate) fn add_bias_and_tanh => add_bias_and_tanh_impl(z: &mut [f64], bias: &[f64], precision: Precision)
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
    pub(crate) fn multiply_by_tanh_derivative => multiply_by_tanh_derivative_impl(tangent: &mut [f64], activation: &[f64])
}

#[inline(always)]
fn multiply_by_tanh_derivative_impl(tangent: &mut [f64], activation: &[f64]) {
    for (t, h) in tangent.iter_mut().zip(activation) {
        *t *= 1.0 - h * h;
    }
}
