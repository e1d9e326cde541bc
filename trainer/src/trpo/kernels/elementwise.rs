//! Element-wise passes over a batch (column-major, one sample per column): adding a
//! layer's bias, its tanh activation, the tanh derivative `1 − h²`, bias gradients, and
//! the copies between the learner's f64 and a pass's scalar.

use super::Real;

vector_dispatch! {
    /// Adds `bias` (one per row) to every column of the column-major `z`.
    pub(crate) fn add_bias<T: Real> => add_bias_impl(z: &mut [T], bias: &[T])
}

#[inline(always)]
fn add_bias_impl<T: Real>(z: &mut [T], bias: &[T]) {
    for column in z.chunks_exact_mut(bias.len()) {
        for (value, &b) in column.iter_mut().zip(bias) {
            *value += b;
        }
    }
}

vector_dispatch! {
    /// `sums[i] = Σⱼ u[i, j]` over the columns of the column-major `u` (a bias gradient),
    /// in the pass's scalar, like the weight gradients' sums over the same columns.
    pub(crate) fn row_sums<T: Real> => row_sums_impl(sums: &mut [T], u: &[T])
}

#[inline(always)]
fn row_sums_impl<T: Real>(sums: &mut [T], u: &[T]) {
    sums.fill(T::ZERO);
    for column in u.chunks_exact(sums.len()) {
        for (sum, &x) in sums.iter_mut().zip(column) {
            *sum += x;
        }
    }
}

vector_dispatch! {
    /// `z ← tanh(z + bias)` per column: the activation of a hidden layer.
    pub(crate) fn add_bias_and_tanh<T: Real> => add_bias_and_tanh_impl(z: &mut [T], bias: &[T])
}

#[inline(always)]
fn add_bias_and_tanh_impl<T: Real>(z: &mut [T], bias: &[T]) {
    for column in z.chunks_exact_mut(bias.len()) {
        for (value, &b) in column.iter_mut().zip(bias) {
            *value = (*value + b).activation();
        }
    }
}

vector_dispatch! {
    /// `tangent ⊙= 1 − h²`, the derivative of tanh expressed through its output `h`.
    pub(crate) fn multiply_by_tanh_derivative<T: Real> => multiply_by_tanh_derivative_impl(tangent: &mut [T], activation: &[T])
}

#[inline(always)]
fn multiply_by_tanh_derivative_impl<T: Real>(tangent: &mut [T], activation: &[T]) {
    for (t, &h) in tangent.iter_mut().zip(activation) {
        *t *= T::ONE - h * h;
    }
}

vector_dispatch! {
    /// `target = source` element-wise, rounded to the pass's scalar.
    pub(crate) fn from_f64<T: Real> => from_f64_impl(target: &mut [T], source: &[f64])
}

#[inline(always)]
fn from_f64_impl<T: Real>(target: &mut [T], source: &[f64]) {
    for (t, &s) in target.iter_mut().zip(source) {
        *t = T::narrow(s);
    }
}

vector_dispatch! {
    /// `target = source` element-wise, in f64 (exact).
    pub(crate) fn to_f64<T: Real> => to_f64_impl(target: &mut [f64], source: &[T])
}

#[inline(always)]
fn to_f64_impl<T: Real>(target: &mut [f64], source: &[T]) {
    for (t, &s) in target.iter_mut().zip(source) {
        *t = s.widen();
    }
}
