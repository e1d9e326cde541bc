//! Exploration noise: a small seeded PRNG and Gaussian and categorical sampling. The
//! log-probabilities reported beside each action are the shared definitions
//! ([`tether_shared::policy::gaussian_log_prob`], [`LogSoftmax`]) the host checks them with.

use core::f32::consts::PI;

use tether_shared::policy::{LogSoftmax, gaussian_log_prob};
use tether_shared::seeds::mix64;

/// PCG32 (XSH-RR, 64-bit state): small, fast, and good enough for exploration noise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    increment: u64,
}

impl Pcg32 {
    const MULTIPLIER: u64 = 6_364_136_223_846_793_005;

    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = Pcg32 {
            state: 0,
            increment: (mix64(seed ^ 0xDA3E_39CB_94B9_5BDB) << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(mix64(seed));
        rng.next_u32();
        rng
    }

    /// The next 32 uniformly distributed bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old
            .wrapping_mul(Self::MULTIPLIER)
            .wrapping_add(self.increment);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in `[0, 1)`, 24 bits of resolution.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    pub fn next_f32_open0(&mut self) -> f32 {
        ((self.next_u32() >> 8) + 1) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

/// Draws actions from a policy's output distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    rng: Pcg32,
    /// The second value of the last Box–Muller pair, not yet used.
    spare: Option<f32>,
}

impl Sampler {
    /// A sampler seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Sampler {
            rng: Pcg32::new(seed),
            spare: None,
        }
    }

    /// Restarts the noise sequence from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        *self = Sampler::new(seed);
    }

    /// A standard normal draw (Box–Muller, both values of each pair used).
    pub fn standard_normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = self.rng.next_f32_open0();
        let u2 = self.rng.next_f32();
        let radius = libm::sqrtf(-2.0 * libm::logf(u1));
        let (sin, cos) = crate::trig::sin_cos(2.0 * PI * u2);
        self.spare = Some(radius * sin);
        radius * cos
    }

    /// Writes `mean + exp(log_std) * N(0, 1)` per dimension into `action` and returns the
    /// Gaussian log-density of that (unclamped) action. The three slices are zipped: the
    /// shortest sets the dimension.
    pub fn gaussian(&mut self, mean: &[f32], log_std: &[f32], action: &mut [f32]) -> f32 {
        for ((a, &m), &s) in action.iter_mut().zip(mean).zip(log_std) {
            *a = m + libm::expf(s) * self.standard_normal();
        }
        gaussian_log_prob(mean, log_std, action)
    }

    /// Samples an index from `softmax(logits)` by inverse CDF and returns it with its
    /// log-probability. Returns `None` for empty or non-finite logits.
    pub fn categorical(&mut self, logits: &[f32]) -> Option<(usize, f32)> {
        let distribution = LogSoftmax::new(logits)?;
        let u = self.rng.next_f32();
        let mut cumulative = 0.0f32;
        let mut chosen = distribution.len() - 1;
        for (k, log_prob) in distribution.log_probs().enumerate() {
            cumulative += libm::expf(log_prob);
            if u < cumulative {
                chosen = k;
                break;
            }
        }
        Some((chosen, distribution.log_prob(chosen)?))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u32> = {
            let mut r = Pcg32::new(7);
            (0..8).map(|_| r.next_u32()).collect()
        };
        let b: Vec<u32> = {
            let mut r = Pcg32::new(7);
            (0..8).map(|_| r.next_u32()).collect()
        };
        let c: Vec<u32> = {
            let mut r = Pcg32::new(8);
            (0..8).map(|_| r.next_u32()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_ranges_hold() {
        let mut r = Pcg32::new(1);
        for _ in 0..10_000 {
            let u = r.next_f32();
            assert!((0.0..1.0).contains(&u));
            let v = r.next_f32_open0();
            assert!(v > 0.0 && v <= 1.0);
        }
    }

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut s = Sampler::new(42);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| s.standard_normal() as f64).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn categorical_frequencies_follow_softmax() {
        let logits = [0.0f32, 1.0, -1.0, 0.5];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let mut s = Sampler::new(3);
        let mut counts = [0usize; 4];
        let n = 100_000;
        for _ in 0..n {
            let (k, lp) = s.categorical(&logits).unwrap();
            counts[k] += 1;
            let expected = logits[k] as f64 - z.ln();
            assert!((lp as f64 - expected).abs() < 1e-5);
        }
        for k in 0..4 {
            let p = (logits[k] as f64).exp() / z;
            let freq = counts[k] as f64 / n as f64;
            assert!((freq - p).abs() < 0.01, "choice {k}: {freq} vs {p}");
        }
    }

    #[test]
    fn bad_logits_are_refused_not_sampled() {
        let mut s = Sampler::new(0);
        assert_eq!(s.categorical(&[]), None);
        assert_eq!(s.categorical(&[0.0, f32::NAN]), None);
    }
}
