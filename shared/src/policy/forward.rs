//! The f32 forward pass: what the device computes every control step.
//!
//! It allocates nothing and never panics: lengths are checked once when a [`PolicyView`] is
//! made and again (cheaply) per call, and a mismatch is an error value.

use super::spec::{NORMALIZED_OBS_CLIP, PolicyHead, PolicySpec};

/// Why a forward pass could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ForwardError {
    /// The parameter slice is not [`PolicySpec::param_count`] long.
    ParamLength {
        /// Values the spec needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The observation is not `obs_dim` long.
    ObsLength,
    /// The scratch buffer is shorter than [`PolicySpec::scratch_len`].
    ScratchTooShort,
    /// The output buffer is not [`PolicySpec::output_dim`] long.
    OutputLength,
}

/// A policy's parameters interpreted through its spec: the thing that runs.
#[derive(Clone, Copy, Debug)]
pub struct PolicyView<'a> {
    spec: &'a PolicySpec,
    params: &'a [f32],
}

impl<'a> PolicyView<'a> {
    /// Pairs a spec with its flat parameters, checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        let expected = spec.param_count();
        if params.len() != expected {
            return Err(ForwardError::ParamLength {
                expected,
                got: params.len(),
            });
        }
        Ok(PolicyView { spec, params })
    }

    /// The spec this view reads its parameters with.
    pub fn spec(&self) -> &'a PolicySpec {
        self.spec
    }

    /// The state-independent log standard deviations of a Gaussian head (`None` for a
    /// categorical head).
    pub fn log_std(&self) -> Option<&'a [f32]> {
        match self.spec.head {
            PolicyHead::Gaussian { action_dim } => {
                let n = action_dim as usize;
                self.params.get(self.params.len() - n..)
            }
            PolicyHead::Categorical { .. } => None,
        }
    }

    /// Runs the network on one observation and writes the Gaussian mean or the categorical
    /// logits into `out`.
    ///
    /// `scratch` must hold at least [`PolicySpec::scratch_len`] values; its contents on return
    /// are unspecified.
    pub fn forward(
        &self,
        obs: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) -> Result<(), ForwardError> {
        let spec = self.spec;
        let obs_dim = spec.obs_dim as usize;
        if obs.len() != obs_dim {
            return Err(ForwardError::ObsLength);
        }
        if out.len() != spec.output_dim() {
            return Err(ForwardError::OutputLength);
        }
        let width = spec.max_width();
        if scratch.len() < 2 * width {
            return Err(ForwardError::ScratchTooShort);
        }
        let (mut current, mut next) = scratch.split_at_mut(width);

        let mut params = self.params;
        if spec.normalize_obs {
            let (mean, rest) = params.split_at(obs_dim);
            let (scale, rest) = rest.split_at(obs_dim);
            params = rest;
            for (((x, o), m), s) in current.iter_mut().zip(obs).zip(mean).zip(scale) {
                *x = ((o - m) * s).clamp(-NORMALIZED_OBS_CLIP, NORMALIZED_OBS_CLIP);
            }
        } else {
            current[..obs_dim].copy_from_slice(obs);
        }

        let layer_count = spec.hidden.len() + 1;
        for (index, (inputs, outputs)) in spec.layers().enumerate() {
            let (weights, rest) = params.split_at(inputs * outputs);
            let (bias, rest) = rest.split_at(outputs);
            params = rest;
            let x = &current[..inputs];
            let is_output = index + 1 == layer_count;
            let target: &mut [f32] = if is_output { out } else { &mut next[..outputs] };
            affine(weights, bias, x, target);
            if !is_output {
                // A separate, branch-free pass so the compiler can vectorise it.
                for y in target.iter_mut() {
                    *y = tanh(*y);
                }
                core::mem::swap(&mut current, &mut next);
            }
        }
        Ok(())
    }
}

/// Lanes of a 4-wide vector: one SSE / NEON / Helium register, or four scalar FPU registers
/// on a Cortex-M4F/M7.
type Lanes = [f32; 4];

/// `acc[k] += w[k] * x[k]` for the four lanes. `w` and `x` hold at least four values.
#[inline(always)]
fn mul_add(acc: &mut Lanes, w: &[f32], x: &[f32]) {
    for k in 0..4 {
        acc[k] += w[k] * x[k];
    }
}

/// The per-row summation order, shared by [`dot`] and [`dot4`] so that a row's result does not
/// depend on whether it went through a four-row block:
///
/// - lane `k` of `low` sums the products at indices `≡ k (mod 8)`, lane `k` of `high` those
///   at `≡ k + 4 (mod 8)`, over the whole chunks of eight;
/// - `v = low + high`, then, if `len % 8 ≥ 4`, the next four products are added lane-wise;
/// - the result is `((v₀ + v₂) + (v₁ + v₃)) + tail`, where `tail` sums the last `len % 4`
///   products in order.
#[inline(always)]
fn finish(low: Lanes, high: Lanes, quad: Option<(&[f32], &[f32])>, tail: f32) -> f32 {
    let mut v = [
        low[0] + high[0],
        low[1] + high[1],
        low[2] + high[2],
        low[3] + high[3],
    ];
    if let Some((w, x)) = quad {
        mul_add(&mut v, w, x);
    }
    ((v[0] + v[2]) + (v[1] + v[3])) + tail
}

/// Splits the part after the whole chunks of eight into the optional group of four and the
/// last `len % 4` values.
#[inline(always)]
fn split_rest(rest: &[f32]) -> (Option<&[f32]>, &[f32]) {
    match rest.split_at_checked(4) {
        Some((quad, tail)) => (Some(quad), tail),
        None => (None, rest),
    }
}

/// Sum of the products of the last `len % 4` (at most three) values, in order. Unrolled with
/// a bound the compiler can see, instead of a loop over a length it cannot.
#[inline(always)]
fn tail_dot(a: &[f32], x: &[f32]) -> f32 {
    let mut t = 0.0;
    for j in 0..3 {
        if let (Some(p), Some(q)) = (a.get(j), x.get(j)) {
            t += p * q;
        }
    }
    t
}

/// Dot product of one row with `x` (same length), in the order described at [`finish`].
///
/// Two 4-lane accumulators over chunks of eight: written lane-wise on `[f32; 4]` arrays so
/// that LLVM's SLP vectoriser turns each into one `mulps`/`addps` pair on the x86-64 baseline
/// (SSE2) and NEON, while a scalar FPU still gets eight independent dependency chains.
#[inline]
fn dot(a: &[f32], x: &[f32]) -> f32 {
    let (chunks_a, rest_a) = a.as_chunks::<8>();
    let (chunks_x, rest_x) = x.as_chunks::<8>();
    let mut low = [0.0f32; 4];
    let mut high = [0.0f32; 4];
    for (ca, cx) in chunks_a.iter().zip(chunks_x) {
        let (al, ah) = ca.split_at(4);
        let (xl, xh) = cx.split_at(4);
        mul_add(&mut low, al, xl);
        mul_add(&mut high, ah, xh);
    }
    let (quad_a, tail_a) = split_rest(rest_a);
    let (quad_x, tail_x) = split_rest(rest_x);
    let tail = tail_dot(tail_a, tail_x);
    finish(low, high, quad_a.zip(quad_x), tail)
}

/// Dot products of four consecutive rows (`w` holds `4 * x.len()` values) with `x`, each
/// bit-identical to [`dot`] of that row.
///
/// Register blocking, the classic GEMV trick: each chunk of `x` is loaded once and multiplied
/// into four rows, so a chunk of eight costs two loads of `x`, eight of weights, eight
/// multiplies and eight adds for 32 multiply-accumulates. Four rows and not eight: four rows
/// of two 4-lane accumulators plus two of `x` fit in SSE2's sixteen registers; eight rows would
/// spill. The horizontal sums at the end are paid once per row.
///
/// The shape is what LLVM vectorises lane-wise: small-looking changes here (a branch around
/// the remainder code, building the four results in one transposed add) have made its SLP
/// vectoriser group the *rows* into vector lanes instead, transposing weights inside the loop
/// at twice the instruction count. Re-check with `examples/step_count` after editing.
#[inline]
fn dot4(w: &[f32], x: &[f32]) -> [f32; 4] {
    let n = x.len();
    let (r0, rest) = w.split_at(n);
    let (r1, rest) = rest.split_at(n);
    let (r2, r3) = rest.split_at(n);
    let (chunks_x, rest_x) = x.as_chunks::<8>();
    let (c0, t0) = r0.as_chunks::<8>();
    let (c1, t1) = r1.as_chunks::<8>();
    let (c2, t2) = r2.as_chunks::<8>();
    let (c3, t3) = r3.as_chunks::<8>();
    let mut low = [[0.0f32; 4]; 4];
    let mut high = [[0.0f32; 4]; 4];
    for ((((cx, a0), a1), a2), a3) in chunks_x.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
        let (xl, xh) = cx.split_at(4);
        for (r, a) in [a0, a1, a2, a3].into_iter().enumerate() {
            let (al, ah) = a.split_at(4);
            mul_add(&mut low[r], al, xl);
            mul_add(&mut high[r], ah, xh);
        }
    }
    let (quad_x, tail_x) = split_rest(rest_x);
    let mut out = [0.0f32; 4];
    for (r, rest) in [t0, t1, t2, t3].into_iter().enumerate() {
        let (quad, tail) = split_rest(rest);
        let tail = tail_dot(tail, tail_x);
        out[r] = finish(low[r], high[r], quad.zip(quad_x), tail);
    }
    out
}

/// `y = W x + b` for a row-major `W` of `y.len()` rows of `x.len()` values: four rows at a
/// time through [`dot4`], the remaining `y.len() % 4` rows through [`dot`].
#[inline]
fn affine(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    if n == 0 {
        y.copy_from_slice(b);
        return;
    }
    let (y4, y_rest) = y.as_chunks_mut::<4>();
    let (b4, b_rest) = b.as_chunks::<4>();
    let blocks = w.chunks_exact(4 * n);
    let w_rest = blocks.remainder();
    for ((yv, bv), wb) in y4.iter_mut().zip(b4).zip(blocks) {
        let s = dot4(wb, x);
        for k in 0..4 {
            yv[k] = s[k] + bv[k];
        }
    }
    for ((y, b), row) in y_rest.iter_mut().zip(b_rest).zip(w_rest.chunks_exact(n)) {
        *y = dot(row, x) + b;
    }
}

/// Inputs are clamped to `±TANH_CLAMP`, where `tanh` is 1 to within 3·10⁻⁸.
const TANH_CLAMP: f32 = 9.0;
/// Numerator of the rational approximation, coefficients of `x²⁰..x²⁶` (see [`tanh`]).
const TANH_P: [f32; 7] = [
    1.0,
    -0.158_870_35,
    0.031_409_964,
    0.007_973_689,
    2.285_455_6e-4,
    1.381_335_3e-6,
    9.022_630_4e-10,
];
/// Denominator of the rational approximation, coefficients of `x²⁰..x²⁶`.
const TANH_Q: [f32; 7] = [
    1.0,
    0.174_462_88,
    -0.043_768_864,
    0.024_090_383,
    1.640_630_1e-3,
    2.183_208e-5,
    5.237_468e-8,
];

/// `tanh` in f32 as `x·P(x²)/Q(x²)` on `|x| ≤ 9` (saturating beyond), with absolute error
/// below 1·10⁻⁶ everywhere (about 5·10⁻⁷ at worst, checked against `libm::tanh` in the tests).
///
/// The degree-6/6 coefficients were fitted for this crate by iteratively reweighted linear
/// least squares on `[0, 9]` (max error 7·10⁻⁸ in exact arithmetic) and rounded to f32; the
/// rest of the error is f32 rounding in the Horner evaluation. Branch-free, so a loop of
/// calls vectorises. NaN in, NaN out.
#[inline]
pub(crate) fn tanh(x: f32) -> f32 {
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP);
    let s = x * x;
    let mut p = TANH_P[6];
    let mut q = TANH_Q[6];
    for k in (0..6).rev() {
        p = p * s + TANH_P[k];
        q = q * s + TANH_Q[k];
    }
    (x * p / q).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::policy::PolicySpec;

    fn spec(hidden: &[u16], head: PolicyHead, normalize_obs: bool) -> PolicySpec {
        PolicySpec {
            obs_dim: 2,
            hidden: heapless::Vec::from_slice(hidden).unwrap(),
            head,
            normalize_obs,
        }
    }

    #[test]
    fn hand_computed_two_layer_network() {
        // 2 -> 2 (tanh) -> 1, Gaussian with log_std.
        let s = spec(&[2], PolicyHead::Gaussian { action_dim: 1 }, false);
        #[rustfmt::skip]
        let params = [
            1.0, 2.0,  -1.0, 0.5,  // W1 rows
            0.1, -0.2,             // b1
            3.0, -1.0,             // W2
            0.5,                   // b2
            -0.7,                  // log_std
        ];
        let view = PolicyView::new(&s, &params).unwrap();
        let obs = [0.3, -0.4];
        let mut scratch = [0.0; 8];
        let mut out = [0.0; 1];
        view.forward(&obs, &mut scratch, &mut out).unwrap();
        let h0 = libm::tanh(1.0 * 0.3 + 2.0 * -0.4 + 0.1);
        let h1 = libm::tanh(-0.3 + 0.5 * -0.4 - 0.2);
        let expected = 3.0 * h0 - 1.0 * h1 + 0.5;
        assert!(
            (out[0] as f64 - expected).abs() < 1e-6,
            "{} vs {expected}",
            out[0]
        );
        assert_eq!(view.log_std(), Some(&[-0.7f32][..]));
    }

    #[test]
    fn normaliser_centres_scales_and_clamps() {
        // No hidden layer: identity-like output layer exposes the normalised input.
        let s = spec(&[], PolicyHead::Categorical { n: 2 }, true);
        #[rustfmt::skip]
        let params = [
            1.0, -1.0,      // mean
            2.0, 100.0,     // scale
            1.0, 0.0, 0.0, 1.0, // W
            0.0, 0.0,       // b
        ];
        let view = PolicyView::new(&s, &params).unwrap();
        let mut scratch = [0.0; 4];
        let mut out = [0.0; 2];
        view.forward(&[2.0, 1.0], &mut scratch, &mut out).unwrap();
        assert_eq!(out, [2.0, NORMALIZED_OBS_CLIP]);
        assert_eq!(view.log_std(), None);
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let s = spec(&[4], PolicyHead::Gaussian { action_dim: 1 }, false);
        let params: Vec<f32> = (0..s.param_count()).map(|i| i as f32 * 0.01).collect();
        assert!(matches!(
            PolicyView::new(&s, &params[1..]),
            Err(ForwardError::ParamLength { .. })
        ));
        let view = PolicyView::new(&s, &params).unwrap();
        let mut scratch = [0.0; 8];
        let mut out = [0.0; 1];
        assert_eq!(
            view.forward(&[1.0], &mut scratch, &mut out),
            Err(ForwardError::ObsLength)
        );
        assert_eq!(
            view.forward(&[1.0, 2.0], &mut scratch[..3], &mut out),
            Err(ForwardError::ScratchTooShort)
        );
        assert_eq!(
            view.forward(&[1.0, 2.0], &mut scratch, &mut [0.0; 2]),
            Err(ForwardError::OutputLength)
        );
        assert_eq!(view.forward(&[1.0, 2.0], &mut scratch, &mut out), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn fast_tanh_is_within_1e6_of_exact(x in -20.0f32..20.0) {
            let err = (tanh(x) as f64 - libm::tanh(x as f64)).abs();
            proptest::prop_assert!(err < 1e-6, "tanh({x}): error {err}");
        }
    }

    #[test]
    fn fast_tanh_on_a_dense_grid_and_at_the_edges() {
        let mut worst = 0.0f64;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 6.0e-6;
            worst = worst.max((tanh(x) as f64 - libm::tanh(x as f64)).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert_eq!(tanh(0.0), 0.0);
        for (x, y) in [(100.0, 1.0), (-100.0, -1.0), (f32::INFINITY, 1.0)] {
            assert!(
                (tanh(x) - y).abs() < 1e-6 && tanh(x).abs() <= 1.0,
                "tanh({x})"
            );
        }
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(-0.3), -tanh(0.3));
    }

    #[test]
    fn four_row_blocks_match_single_rows_bit_for_bit() {
        for n in 0..40 {
            for m in 0..10 {
                let w: Vec<f32> = (0..n * m).map(|i| (i as f32 * 0.37).sin()).collect();
                let b: Vec<f32> = (0..m).map(|i| (i as f32 * 0.5).cos()).collect();
                let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut y = std::vec![0.0f32; m];
                affine(&w, &b, &x, &mut y);
                for r in 0..m {
                    let row = &w[r * n..(r + 1) * n];
                    let single = if n == 0 { b[r] } else { dot(row, &x) + b[r] };
                    assert_eq!(
                        y[r].to_bits(),
                        single.to_bits(),
                        "n = {n}, m = {m}, row {r}"
                    );
                    let naive: f64 = row.iter().zip(&x).map(|(p, q)| *p as f64 * *q as f64).sum();
                    assert!((y[r] as f64 - naive - b[r] as f64).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn dot_matches_naive_sum_for_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "n = {n}");
        }
    }
}
