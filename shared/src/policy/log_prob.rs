//! Log-probabilities of the policy's actions, in f32: the values the device reports beside
//! each sampled action and the host recomputes to cross-check them. One definition, so the
//! two sides can only differ by what they were given.

/// `ln(2π) / 2`, the constant term of a Gaussian log-density per dimension.
const HALF_LN_2PI: f32 = 0.918_938_5;

/// Log-density of `action` under a diagonal Gaussian with the given mean and log standard
/// deviations (natural log of action units): `Σ −½((a−μ)/σ)² − ln σ − ½ ln 2π`. The three
/// slices are zipped: the shortest sets the dimension.
#[inline]
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
#[inline]
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

/// `log softmax` of a set of logits: the categorical distribution they define, ready to
/// give each choice's log-probability.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax<'a> {
    logits: &'a [f32],
    /// The largest logit (subtracted first, so no `exp` overflows).
    max: f32,
    /// `ln Σ exp(z − max)`.
    log_sum: f32,
}

impl<'a> LogSoftmax<'a> {
    /// The distribution of finite, non-empty `logits`; `None` otherwise.
    #[inline]
    pub fn new(logits: &'a [f32]) -> Option<Self> {
        let max = *logits.get(argmax(logits)?)?;
        let sum: f32 = logits.iter().map(|&z| libm::expf(z - max)).sum();
        Some(LogSoftmax {
            logits,
            max,
            log_sum: libm::logf(sum),
        })
    }

    /// Number of choices.
    #[inline]
    pub fn len(&self) -> usize {
        self.logits.len()
    }

    /// Whether there is no choice (never, for a value [`LogSoftmax::new`] returned).
    pub fn is_empty(&self) -> bool {
        self.logits.is_empty()
    }

    /// Log-probability of choice `index`, `None` past the last choice.
    #[inline]
    pub fn log_prob(&self, index: usize) -> Option<f32> {
        self.logits.get(index).map(|&z| self.of_logit(z))
    }

    /// Log-probabilities of every choice, in order.
    #[inline]
    pub fn log_probs(&self) -> impl Iterator<Item = f32> + '_ {
        self.logits.iter().map(|&z| self.of_logit(z))
    }

    #[inline]
    fn of_logit(&self, z: f32) -> f32 {
        z - self.max - self.log_sum
    }
}

/// `log softmax(logits)[index]`: the log-probability of choice `index`; `None` for empty or
/// non-finite logits or an index past the last choice.
pub fn categorical_log_prob(logits: &[f32], index: usize) -> Option<f32> {
    LogSoftmax::new(logits)?.log_prob(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_log_prob_matches_closed_form() {
        let mean = [0.3f32, -1.0];
        let log_std = [-0.5f32, 0.2];
        let action = [0.1f32, 0.4];
        let expected: f64 = (0..2)
            .map(|i| {
                let s = libm::exp(log_std[i] as f64);
                let z = (action[i] as f64 - mean[i] as f64) / s;
                -0.5 * z * z - libm::log(s) - 0.5 * libm::log(2.0 * core::f64::consts::PI)
            })
            .sum();
        let got = gaussian_log_prob(&mean, &log_std, &action) as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn categorical_log_prob_is_log_softmax() {
        let logits = [0.0f32, 1.0, -1.0, 0.5];
        let z: f64 = logits.iter().map(|&l| libm::exp(l as f64)).sum();
        for (k, &l) in logits.iter().enumerate() {
            let expected = l as f64 - libm::log(z);
            let got = categorical_log_prob(&logits, k).expect("valid choice") as f64;
            assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        }
        let dist = LogSoftmax::new(&logits).expect("finite");
        let total: f32 = dist.log_probs().map(libm::expf).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(dist.len(), 4);
    }

    #[test]
    fn bad_logits_and_indices_have_no_log_prob() {
        assert_eq!(categorical_log_prob(&[], 0), None);
        assert_eq!(categorical_log_prob(&[0.0, f32::NAN], 0), None);
        assert_eq!(categorical_log_prob(&[0.0, 1.0], 2), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::INFINITY, 0.0]), None);
        assert_eq!(argmax(&[]), None);
    }
}
