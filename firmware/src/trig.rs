//! Sine and cosine in single precision, for the plant models and the sampler.
//!
//! # Why not libm
//!
//! `libm::sinf`/`cosf`/`sincosf` reduce the argument and evaluate their polynomials in
//! f64. A Cortex-M4F's FPU is single-precision only, so there every one of those f64
//! operations is a software routine (`__aeabi_dmul`, `__aeabi_dadd`, …): about 1,500
//! instructions per call, most of a QUBE model step. These functions use f32 operations
//! only (plus one float-to-integer conversion), so they cost a few dozen instructions on
//! such an FPU, and — being the same sequence of IEEE operations everywhere, with no fused
//! multiply-add — they give bit-identical results on the host and on the device.
//!
//! # Method and accuracy
//!
//! `x` is reduced to `r = x − k·π/2` with `k` the integer nearest `x·2/π` (three-part
//! Cody–Waite: π/2 split into a part with 8 significant bits, one with 12 and the rest, so
//! that `k·P1` and `k·P2` are exact for |k| < 4096), then `sin r` and `cos r` on
//! [−π/4, π/4] are minimax polynomials of degree 7 and 8 (coefficients fitted for this
//! crate by `scripts/fit_approximations.py`), and the quadrant `k mod 4` picks and signs
//! them.
//!
//! - |x| ≤ 6433 (|k| < 4096): error at most 2 ulp of the result where it exceeds 10⁻³ in
//!   magnitude, at most 10⁻⁹ absolutely nearer a zero of the function (tested densely
//!   against f64 `sin`/`cos`); results lie in [−1, 1]. Every angle the plant models and the sampler produce is far inside this range.
//! - 6433 < |x| < 6.5·10⁶: the reduction is no longer exact; the absolute error grows to
//!   about |x|·2⁻²³ (results stay in [−1, 1]). An f32 angle there has a resolution of
//!   10⁻³ rad or worse anyway.
//! - |x| ≥ 6.5·10⁶, ±∞, NaN: NaN, so a runaway angle fails a device's finiteness checks
//!   rather than passing for a plausible value.

use core::f32::consts::FRAC_2_PI;

/// π/2 in three parts: 8 significant bits, 12 bits, and the remaining 24.
const PIO2_1: f32 = 1.570_312_5;
const PIO2_2: f32 = 4.837_513e-4;
const PIO2_3: f32 = 7.549_79e-8;

/// 1.5·2²³: adding and subtracting it rounds an f32 of magnitude below 2²² to the nearest
/// integer (ties to even) in the current rounding mode, round-to-nearest.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Largest |x| handled: |x·2/π| stays below 2²² so that the rounding trick is exact.
const MAX_ARGUMENT: f32 = 6.5e6;

/// `sin r = r + r³·(S1 + r²·(S2 + r²·S3))` on [−π/4, π/4], relative error ≤ 4·10⁻⁹ before
/// rounding.
const S1: f32 = -0.166_666_55;
const S2: f32 = 0.008_332_16;
const S3: f32 = -1.951_528_4e-4;

/// `cos r = 1 − r²/2 + r⁴·(C1 + r²·(C2 + r²·C3))` on [−π/4, π/4], absolute error ≤ 10⁻¹⁰
/// before rounding.
const C1: f32 = 0.041_666_646;
const C2: f32 = -0.001_388_736_8;
const C3: f32 = 2.443_845_2e-5;

/// `(sin x, cos x)` with one argument reduction (accuracy: module documentation).
#[inline]
pub fn sin_cos(x: f32) -> (f32, f32) {
    // NaN fails `is_finite`; ±∞ and huge values fail the bound.
    if !x.is_finite() || x.abs() >= MAX_ARGUMENT {
        return (f32::NAN, f32::NAN);
    }
    let k = (x * FRAC_2_PI + ROUND_MAGIC) - ROUND_MAGIC;
    let r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    let z = r * r;
    let sin = r + r * z * (S1 + z * (S2 + z * S3));
    let cos = (1.0 - 0.5 * z) + z * z * (C1 + z * (C2 + z * C3));
    // k is an integer of magnitude below 2²²: the conversion is exact.
    let quadrant = k as i32;
    let (sin, cos) = if quadrant & 1 != 0 {
        (cos, -sin)
    } else {
        (sin, cos)
    };
    if quadrant & 2 != 0 {
        (-sin, -cos)
    } else {
        (sin, cos)
    }
}

/// `sin x` (accuracy: module documentation).
#[inline]
pub fn sin(x: f32) -> f32 {
    sin_cos(x).0
}

/// `cos x` (accuracy: module documentation).
#[inline]
pub fn cos(x: f32) -> f32 {
    sin_cos(x).1
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// Distance of `got` from the f64 value `want` in units of the f32 spacing at `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let at = (want as f32).abs();
        let spacing = f64::from(at.next_up() - at);
        (f64::from(got) - want).abs() / spacing
    }

    /// Largest errors of sin and cos over the arguments: in ulp where the true value
    /// exceeds 10⁻³ in magnitude, absolute near the functions' zeros (where relative error
    /// means nothing).
    fn worst(args: impl Iterator<Item = f32>) -> (f64, f64) {
        let (mut worst_ulps, mut worst_near_zero) = (0.0f64, 0.0f64);
        for x in args {
            let (s, c) = sin_cos(x);
            for (got, want) in [(s, libm::sin(f64::from(x))), (c, libm::cos(f64::from(x)))] {
                if want.abs() > 1e-3 {
                    worst_ulps = worst_ulps.max(ulps(got, want));
                } else {
                    worst_near_zero = worst_near_zero.max((f64::from(got) - want).abs());
                }
                assert!((-1.0..=1.0).contains(&got), "sin_cos({x}) = ({s}, {c})");
            }
        }
        (worst_ulps, worst_near_zero)
    }

    #[test]
    fn within_two_ulp_over_the_reduction_range() {
        // Densely over the angles the plants and Box–Muller reach, then sparsely to 6433.
        let near = (-2_000_000..=2_000_000).map(|i| i as f32 * 5.0e-5);
        let far = (-1_000_000..=1_000_000).map(|i| i as f32 * 6.433e-3);
        for (name, (u, a)) in [("|x| <= 100", worst(near)), ("|x| <= 6433", worst(far))] {
            std::println!("{name}: {u} ulp, {a:e} near zeros");
            assert!(u <= 2.0, "{name}: {u} ulp");
            assert!(a <= 1.0e-9, "{name}: absolute error {a:e} near a zero");
        }
    }

    #[test]
    fn quadrant_boundaries_every_neighbouring_float() {
        for k in -64..=64 {
            let centre = k as f32 * core::f32::consts::FRAC_PI_4;
            let mut below = centre;
            let mut above = centre;
            let mut args = std::vec::Vec::new();
            for _ in 0..2_000 {
                args.push(below);
                args.push(above);
                below = below.next_down();
                above = above.next_up();
            }
            let (u, a) = worst(args.into_iter());
            assert!(u <= 2.0 && a <= 1.0e-9, "around {centre}: {u} ulp, {a:e}");
        }
    }

    #[test]
    fn small_arguments_and_special_values() {
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
        assert_eq!(sin_cos(-0.0), (0.0, 1.0));
        for x in [1e-30f32, 1e-10, 1e-4, 3e-4] {
            assert_eq!(sin(x), x, "sin({x}) rounds to x");
        }
        for x in [1e-30f32, 1e-10, 1e-4] {
            assert_eq!(cos(x), 1.0, "cos({x}) rounds to 1");
        }
        // Beyond 6433 accuracy degrades but results stay in [-1, 1] (checked by `worst`).
        worst((1..=1000).map(|i| 6433.0 + i as f32 * 6467.0));
        for x in [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            6.5e6,
            -1e30,
            f32::MAX,
        ] {
            let (s, c) = sin_cos(x);
            assert!(s.is_nan() && c.is_nan(), "sin_cos({x}) = ({s}, {c})");
        }
    }

    #[test]
    fn odd_and_even() {
        for i in 1..100_000 {
            let x = i as f32 * 1.7e-3;
            assert_eq!(sin(-x).to_bits(), (-sin(x)).to_bits(), "sin(-{x})");
            assert_eq!(cos(-x).to_bits(), cos(x).to_bits(), "cos(-{x})");
        }
    }
}
