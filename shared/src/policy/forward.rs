//! The f32 forward pass: what the device computes every control step.
//!
//! It allocates nothing and never panics: lengths are checked once when a [`PolicyView`] is
//! made and again (cheaply) per call, and a mismatch is an error value.
//!
//! # The arithmetic is part of the definition
//!
//! The host recomputes the device's log-probabilities with this code, so the device must
//! reproduce it bit for bit, whatever parameter layout it evaluates from. The definition:
//! the observation goes through [`normalize`] (if the spec has a normaliser); each layer
//! output starts from its bias and adds its weight·input products in input order, each
//! product and sum rounded to f32 (no FMA); hidden outputs then go through [`tanh`].

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
    layers: LayeredParams<'a>,
}

impl<'a> PolicyView<'a> {
    /// Pairs a spec with its flat parameters, checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        Ok(PolicyView {
            layers: LayeredParams::new(spec, params)?,
        })
    }

    /// The spec this view reads its parameters with.
    pub fn spec(&self) -> &'a PolicySpec {
        self.layers.spec()
    }

    /// The state-independent log standard deviations of a Gaussian head (`None` for a
    /// categorical head).
    pub fn log_std(&self) -> Option<&'a [f32]> {
        self.layers.log_std()
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
        self.layers
            .forward(obs, scratch, out, |region, x, y, hidden| {
                let (weights, bias) = region.split_at(x.len() * y.len());
                affine(weights, bias, x, y);
                if hidden {
                    // A separate, branch-free pass so the compiler can vectorise it.
                    for y in y.iter_mut() {
                        *y = tanh(*y);
                    }
                }
            })
    }
}

/// Parameters laid out as the normaliser's mean and scale (when the spec has one), then one
/// region of `outputs · (inputs + 1)` values per layer, then the Gaussian log-stds, in
/// whatever order inside a region the evaluator expects: the frame every forward pass
/// shares. [`PolicyView`] reads the wire order; the firmware reads its tiled order; both
/// call [`LayeredParams::forward`] with their own layer kernel.
#[derive(Clone, Copy, Debug)]
pub struct LayeredParams<'a> {
    spec: &'a PolicySpec,
    params: &'a [f32],
    /// [`PolicySpec::max_width`], computed once.
    width: usize,
}

impl<'a> LayeredParams<'a> {
    /// Pairs a spec with its parameters, checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        let expected = spec.param_count();
        if params.len() != expected {
            return Err(ForwardError::ParamLength {
                expected,
                got: params.len(),
            });
        }
        Ok(LayeredParams {
            spec,
            params,
            width: spec.max_width(),
        })
    }

    /// Like [`Self::new`] without recomputing the spec's sizes, for parameters checked with
    /// [`Self::new`] before: `params` must be [`PolicySpec::param_count`] long and `width`
    /// must be [`PolicySpec::max_width`]. Wrong sizes give wrong results or errors, never a
    /// panic.
    pub fn from_checked(spec: &'a PolicySpec, params: &'a [f32], width: usize) -> Self {
        LayeredParams {
            spec,
            params,
            width,
        }
    }

    /// The spec the parameters are read with.
    pub fn spec(&self) -> &'a PolicySpec {
        self.spec
    }

    /// [`PolicySpec::max_width`] of the spec.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The state-independent log standard deviations of a Gaussian head (`None` for a
    /// categorical head): the last values in every layout.
    pub fn log_std(&self) -> Option<&'a [f32]> {
        match self.spec.head {
            PolicyHead::Gaussian { action_dim } => {
                let n = action_dim as usize;
                self.params.get(self.params.len().checked_sub(n)?..)
            }
            PolicyHead::Categorical { .. } => None,
        }
    }
}

impl LayeredParams<'_> {
    /// Checks the buffers, normalises the observation, then walks the layers, calling
    /// `layer(region, x, y, hidden)` for each: it must write `y = W·x + b` summed in the
    /// order of the definition (module documentation), then [`tanh`] when `hidden`. Wrong
    /// sizes are errors, never panics.
    #[inline(always)]
    pub fn forward(
        &self,
        obs: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
        mut layer: impl FnMut(&[f32], &[f32], &mut [f32], bool),
    ) -> Result<(), ForwardError> {
        let spec = self.spec;
        let obs_dim = spec.obs_dim as usize;
        if obs.len() != obs_dim {
            return Err(ForwardError::ObsLength);
        }
        if out.len() != spec.output_dim() {
            return Err(ForwardError::OutputLength);
        }
        let (mut current, mut next) = scratch
            .get_mut(..2 * self.width)
            .ok_or(ForwardError::ScratchTooShort)?
            .split_at_mut(self.width);
        let mut params = self.params;
        let x = current
            .get_mut(..obs_dim)
            .ok_or_else(|| self.length_error())?;
        if spec.normalize_obs {
            let (mean, rest) = params
                .split_at_checked(obs_dim)
                .ok_or_else(|| self.length_error())?;
            let (scale, rest) = rest
                .split_at_checked(obs_dim)
                .ok_or_else(|| self.length_error())?;
            params = rest;
            normalize(obs, mean, scale, x);
        } else {
            x.copy_from_slice(obs);
        }

        let layer_count = spec.hidden.len() + 1;
        for (index, (inputs, outputs)) in spec.layers().enumerate() {
            let (region, rest) = params
                .split_at_checked(outputs * (inputs + 1))
                .ok_or_else(|| self.length_error())?;
            params = rest;
            let x = current.get(..inputs).ok_or_else(|| self.length_error())?;
            if index + 1 == layer_count {
                layer(region, x, out, false);
            } else {
                let y = next.get_mut(..outputs).ok_or_else(|| self.length_error())?;
                layer(region, x, y, true);
                core::mem::swap(&mut current, &mut next);
            }
        }
        Ok(())
    }

    /// The error for parameters or a width that do not fit the spec (cannot happen when
    /// they were checked; kept so that the forward pass has no panicking path).
    #[cold]
    fn length_error(&self) -> ForwardError {
        ForwardError::ParamLength {
            expected: self.spec.param_count(),
            got: self.params.len(),
        }
    }
}

/// The observation normaliser: `x = clamp((obs − mean) · scale, ±NORMALIZED_OBS_CLIP)`,
/// value by value over the shortest of the four slices.
///
/// Public so that a device-side evaluation of the policy (in another parameter layout) uses
/// the very same arithmetic.
#[inline]
pub fn normalize(obs: &[f32], mean: &[f32], scale: &[f32], x: &mut [f32]) {
    for (((x, o), m), s) in x.iter_mut().zip(obs).zip(mean).zip(scale) {
        *x = ((o - m) * s).clamp(-NORMALIZED_OBS_CLIP, NORMALIZED_OBS_CLIP);
    }
}

/// `y = W x + b` for a row-major `W` of `y.len()` rows of `x.len()` values.
///
/// The summation order is part of the policy's definition, so that any faster evaluation
/// can reproduce it bit for bit: each output starts from its bias and adds its products in
/// input order, `y_r = (((b_r + w_r0·x_0) + w_r1·x_1) + …) + w_r,n−1·x_n−1`, every product
/// and sum rounded to f32 (Rust never fuses them into an FMA). The firmware evaluates the
/// same sums several rows at a time in its own tiled layout; this row-at-a-time version is
/// the reference.
#[inline]
fn affine(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    if n == 0 {
        y.copy_from_slice(b);
        return;
    }
    for ((y, &b), row) in y.iter_mut().zip(b).zip(w.chunks_exact(n)) {
        *y = row.iter().zip(x).fold(b, |acc, (w, x)| acc + w * x);
    }
}

/// 2²⁸: the activation's input goes through fixed point with 28 fraction bits (see [`tanh`]).
///
/// Public, with the coefficients, so that exports in other languages (ONNX, C) write out
/// this very function.
pub const TANH_FIXED_SCALE: f32 = 268_435_456.0;
/// Numerator of the rational approximation: coefficients of `s⁰..s³`, `s = x²` (see
/// [`tanh`]). Public so that a device's assembly kernel evaluates the very same polynomial.
pub const TANH_P: [f32; 4] = [0.999_999_34, 0.129_136_44, 0.002_938_831_2, 1.131_025_5e-5];
/// Denominator of the rational approximation: coefficients of `s⁰..s⁴`.
pub const TANH_Q: [f32; 5] = [
    1.0,
    0.462_467_43,
    0.023_763_843,
    2.370_289_3e-4,
    2.423_850_3e-7,
];

/// `tanh` in f32: `x` clamped to [−8, 8] through fixed point, then `x·P(x²)/Q(x²)`, with
/// absolute error below 1·10⁻⁶ everywhere (about 5·10⁻⁷ at worst, checked against
/// `libm::tanh` in the tests) and `|tanh(x)| ≤ 1`.
///
/// The clamp converts `x·2²⁸` to an `i32` and back (`as` truncates towards zero and
/// saturates), which saturates at ±8 (where `tanh` is 1 to within 2.3·10⁻⁷), moves
/// |x| < 2⁻⁴ towards zero by less than 2⁻²⁸, and maps NaN to 0 (so a NaN pre-activation,
/// which finite weights and observations produce only by overflowing f32, leaves the layer
/// as 0). That is what a Cortex-M FPU's two fixed-point `vcvt` instructions compute, where a
/// float clamp costs eight.
///
/// The degree-7/8 coefficients were fitted for this crate (`scripts/fit_approximations.py`:
/// discrete minimax on `[0, 8]`, error 1.3·10⁻⁷ in exact arithmetic) and rounded to f32; the
/// rest of the error is f32 rounding in the Horner evaluation. Seven multiply-adds and one
/// division, branch-free (a loop of calls vectorises on the host): about 19 instructions on
/// a Cortex-M4F.
///
/// Public because it is the hidden layers' activation by definition: a device-side
/// evaluation of the policy computes exactly this.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let x = ((x * TANH_FIXED_SCALE) as i32) as f32 * (1.0 / TANH_FIXED_SCALE);
    let s = x * x;
    let p = ((TANH_P[3] * s + TANH_P[2]) * s + TANH_P[1]) * s + TANH_P[0];
    let q = (((TANH_Q[4] * s + TANH_Q[3]) * s + TANH_Q[2]) * s + TANH_Q[1]) * s + TANH_Q[0];
    x * p / q
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
        assert_eq!(tanh(f32::NAN), 0.0, "NaN leaves the activation as 0");
        assert_eq!(tanh(-0.3), -tanh(0.3));
        // The fixed-point clamp: saturation at ±8, tiny inputs moved towards zero.
        assert_eq!(tanh(1e30), tanh(8.0));
        assert_eq!(tanh(-f32::INFINITY), -tanh(8.0));
        assert_eq!(tanh(1e-9), 0.0);
    }

    /// Every f32 in [2, 8] (where the result comes within 4·10⁻² of 1): the error bound
    /// holds and the result stays at most 1, so no output clamp is needed. Below 2 the result
    /// is under 0.97 plus the error bound; beyond 8 the clamp repeats tanh(8).
    #[test]
    fn fast_tanh_on_every_float_near_saturation() {
        let (low, high) = (2.0f32.to_bits(), 8.0f32.to_bits());
        let mut worst = 0.0f64;
        for bits in low..=high {
            let x = f32::from_bits(bits);
            let y = tanh(x);
            assert!(y <= 1.0 && tanh(-x) == -y, "tanh({x}) = {y}");
            worst = worst.max((f64::from(y) - libm::tanh(f64::from(x))).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert!(tanh(f32::MAX) <= 1.0 && tanh(f32::MIN) >= -1.0);
    }

    #[test]
    fn affine_sums_each_row_from_its_bias_in_input_order() {
        for n in 0..40 {
            for m in 0..10 {
                let w: Vec<f32> = (0..n * m).map(|i| (i as f32 * 0.37).sin()).collect();
                let b: Vec<f32> = (0..m).map(|i| (i as f32 * 0.5).cos()).collect();
                let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut y = std::vec![0.0f32; m];
                affine(&w, &b, &x, &mut y);
                for r in 0..m {
                    let mut sequential = b[r];
                    for j in 0..n {
                        sequential += w[r * n + j] * x[j];
                    }
                    assert_eq!(y[r].to_bits(), sequential.to_bits(), "n = {n}, row {r}");
                    let naive: f64 = (0..n).map(|j| w[r * n + j] as f64 * x[j] as f64).sum();
                    assert!((y[r] as f64 - naive - b[r] as f64).abs() < 1e-5);
                }
            }
        }
    }
}
