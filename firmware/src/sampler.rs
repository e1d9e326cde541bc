//! Exploration noise: a small seeded PRNG, Gaussian and categorical sampling, and the
//! log-probabilities the device reports beside each action.

use core::f32::consts::PI;

/// `ln(2π) / 2`, the constant term of a Gaussian log-density per dimension.
const HALF_LN_2PI: f32 = 0.918_938_5;

/// Mixes a 64-bit value into a well-distributed one (SplitMix64's finaliser): derives
/// independent seeds from a run seed and an episode id.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed for stream `stream` of episode `episode` in a run seeded with `run_seed` (stream 0:
/// the plant's initial state, stream 1: the exploration noise).
pub fn episode_seed(run_seed: u64, episode: u32, stream: u8) -> u64 {
    mix64(mix64(run_seed ^ ((episode as u64) << 8 | stream as u64)))
}

/// PCG32 (XSH-RR, 64-bit state): small, fast, and good enough for exploration noise.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
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
        let (max, log_sum) = log_sum_exp(logits)?;
        let u = self.rng.next_f32();
        let mut cumulative = 0.0f32;
        let mut chosen = logits.len() - 1;
        for (k, &z) in logits.iter().enumerate() {
            cumulative += libm::expf(z - max - log_sum);
            if u < cumulative {
                chosen = k;
                break;
            }
        }
        let log_prob = logits.get(chosen).map(|&z| z - max - log_sum)?;
        Some((chosen, log_prob))
    }
}

/// Log-density of `action` under a diagonal Gaussian with the given mean and log standard
/// deviations: `Σ −½((a−μ)/σ)² − ln σ − ½ ln 2π`.
pub fn gaussian_log_prob(mean: &[f32], log_std: &[f32], action: &[f32]) -> f32 {
    mean.iter()
        .zip(log_std)
        .zip(action)
        .map(|((&m, &s), &a)| {
            let z = (a - m) * libm::expf(-s);
            -0.5 * z * z - s - HALF_LN_2PI
        })
        .sum()
}

/// Index of the largest logit (the first on ties), `None` when empty or non-finite.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    if logits.iter().any(|z| !z.is_finite()) {
        return None;
    }
    let mut best: Option<(usize, f32)> = None;
    for (k, &z) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| z > b) {
            best = Some((k, z));
        }
    }
    best.map(|(k, _)| k)
}

/// `(max, ln Σ exp(z − max))` of finite, non-empty logits.
fn log_sum_exp(logits: &[f32]) -> Option<(f32, f32)> {
    let max = *logits.get(argmax(logits)?)?;
    let sum: f32 = logits.iter().map(|&z| libm::expf(z - max)).sum();
    Some((max, libm::logf(sum)))
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
    fn gaussian_log_prob_matches_closed_form() {
        let mean = [0.3f32, -1.0];
        let log_std = [-0.5f32, 0.2];
        let action = [0.1f32, 0.4];
        let expected: f64 = (0..2)
            .map(|i| {
                let s = (log_std[i] as f64).exp();
                let z = (action[i] as f64 - mean[i] as f64) / s;
                -0.5 * z * z - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum();
        let got = gaussian_log_prob(&mean, &log_std, &action) as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
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
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::INFINITY, 0.0]), None);
    }
}
