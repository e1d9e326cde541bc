//! Branch-free `tanh` in f64 and f32, so the loops over a batch vectorise. The f32 one is
//! the device's activation ([`tether_shared::policy::tanh`]) bit for bit.

use tether_shared::policy::{TANH_FIXED_SCALE, TANH_P, TANH_Q};

/// tanh(x) within a few ulp of the correctly rounded value, branch-free so loops over it
/// vectorise (libm's `tanh` was over a third of an update's time). Computed as
/// `tanh|x| = −t / (t + 2)` with `t = expm1(−2|x|)`: `expm1` by range reduction
/// `−2|x| = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-13 Taylor polynomial for `expm1(r)`
/// (truncation < 1e-17 relative) and `expm1 = 2ᵏ·(expm1(r) + 1) − 1`. |x| is capped at 22,
/// where tanh is 1 in f64; NaN propagates.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000); // ln 2 to 32 bits (fdlibm)
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76); // ln 2 − LN2_HI
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵², rounds to an integer when added
    const SHIFTER_BITS: i64 = 0x4338_0000_0000_0000;
    let a = x.abs();
    let a = if a > 22.0 { 22.0 } else { a };
    let y = -2.0 * a;
    let shifted = y * std::f64::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER; // round(y / ln 2), in [−64, 0]
    let r = (y - k * LN2_HI) - k * LN2_LO;
    // 1/13!, 1/12!, …, 1/1! (Horner from the highest degree).
    const INVERSE_FACTORIALS: [f64; 13] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
    ];
    let mut p = 0.0;
    for c in INVERSE_FACTORIALS {
        p = p * r + c;
    }
    let expm1_r = p * r;
    let k_int = (shifted.to_bits() as i64).wrapping_sub(SHIFTER_BITS);
    let scale = f64::from_bits((k_int.wrapping_add(1023) as u64) << 52); // 2ᵏ
    let t = scale * expm1_r + (scale - 1.0);
    (-t / (t + 2.0)).copysign(x)
}

/// The device's `tanh` ([`tether_shared::policy::tanh`]), bit for bit, in operations a
/// loop over a batch vectorises. The device clamps its argument through fixed point, a
/// saturating f32 → i32 conversion that x86-64 vectorises poorly (half an update's
/// activation time went there); here the same value comes from `trunc` (exact: `x·2²⁸` is
/// exact, and below 2³¹ in magnitude truncating it is what the conversion does), a clamp to
/// ±2³¹ (where the conversion saturates, to ±2³¹ after rounding back to f32), NaN → 0 and
/// −0 → +0 (an integer has no sign of zero). Then the same rational function in the same
/// order.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const LIMIT: f32 = 2_147_483_648.0; // 2³¹
    let t = (x * TANH_FIXED_SCALE).trunc() + 0.0;
    let t = if t.is_nan() {
        0.0
    } else {
        t.clamp(-LIMIT, LIMIT)
    };
    let x = t * (1.0 / TANH_FIXED_SCALE);
    let s = x * x;
    let p = ((TANH_P[3] * s + TANH_P[2]) * s + TANH_P[1]) * s + TANH_P[0];
    let q = (((TANH_Q[4] * s + TANH_Q[3]) * s + TANH_Q[2]) * s + TANH_Q[1]) * s + TANH_Q[0];
    x * p / q
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The fast tanh against libm's: ≤ 3 ulp over small, large, tiny and
    /// range-reduction-boundary arguments, plus the special values.
    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_libm() {
        let ulps64 = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut worst = 0;
        let samples = (0..200_000)
            .map(|i| {
                let magnitude = match i % 5 {
                    0 => rng.random_range(0.0..1.0),
                    1 => rng.random_range(0.0..25.0),
                    2 => 10f64.powf(rng.random_range(-300.0..0.0)),
                    3 => 10f64.powf(rng.random_range(-38.0..0.0)),
                    _ => rng.random_range(0.3..0.4),
                };
                if i % 2 == 0 { magnitude } else { -magnitude }
            })
            .chain([
                0.0,
                -0.0,
                9.0,
                22.0,
                1e300,
                -1e300,
                5e-324,
                f64::MIN_POSITIVE,
            ]);
        for x in samples {
            let (fast, exact) = (tanh(x), x.tanh());
            worst = worst.max(ulps64(fast, exact));
            assert!(
                ulps64(fast, exact) <= 3,
                "tanh({x:e}) = {fast:e}, libm {exact:e}"
            );
        }
        assert!(worst >= 1, "suspiciously exact");
        assert_eq!((tanh(f64::INFINITY), tanh(f64::NEG_INFINITY)), (1.0, -1.0));
        assert!(tanh(f64::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f64).to_bits());
    }

    /// `tanh_f32` is the device's `tanh` bit for bit: on every f32 of a dense sample of the
    /// range (each exponent, random mantissas), around the clamp at ±8 and on the special
    /// values.
    #[test]
    fn f32_tanh_is_the_devices_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let special = [
            0.0,
            -0.0,
            -1e-9,
            8.0,
            -8.0,
            f32::from_bits(8.0f32.to_bits() - 1),
            f32::from_bits(8.0f32.to_bits() + 1),
            -f32::from_bits(8.0f32.to_bits() - 1),
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let sampled = (0..400_000).map(|_| {
            let bits: u32 = rng.random();
            f32::from_bits(bits)
        });
        let near_clamp = (0..20_000).map(|i| f32::from_bits(8.0f32.to_bits() - 10_000 + i));
        for x in special.into_iter().chain(sampled).chain(near_clamp) {
            let (ours, device) = (tanh_f32(x), tether_shared::policy::tanh(x));
            assert_eq!(ours.to_bits(), device.to_bits(), "tanh({x:e})");
        }
    }
}
