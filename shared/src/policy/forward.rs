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
            for ((y, row), b) in target
                .iter_mut()
                .zip(weights.chunks_exact(inputs))
                .zip(bias)
            {
                *y = dot(row, x) + b;
            }
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

/// Dot product with eight independent accumulators, so the compiler can keep them in SIMD
/// lanes: the control loop's time is almost all spent here.
///
/// Lane `k` sums the products at indices `≡ k (mod 8)` of the whole chunks; the lanes are
/// then combined pairwise and the tail (the last `len % 8` products, summed in order) added.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    const HALF: usize = LANES / 2;
    // Lanes 0..4 and 4..8 as two 4-wide vectors (SSE / NEON registers).
    let mut low = [0.0f32; HALF];
    let mut high = [0.0f32; HALF];
    let (chunks_a, tail_a) = a.as_chunks::<LANES>();
    let (chunks_b, tail_b) = b.as_chunks::<LANES>();
    let tail: f32 = tail_a.iter().zip(tail_b).map(|(x, y)| x * y).sum();
    for (ca, cb) in chunks_a.iter().zip(chunks_b) {
        for k in 0..HALF {
            low[k] += ca[k] * cb[k];
            high[k] += ca[k + HALF] * cb[k + HALF];
        }
    }
    let pairs = [
        low[0] + high[0],
        low[1] + high[1],
        low[2] + high[2],
        low[3] + high[3],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
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
    fn dot_matches_naive_sum_for_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "n = {n}");
        }
    }
}
