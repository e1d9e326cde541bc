//! Checkpointable learner state: everything that influences the learner's future updates,
//! as plain serialisable data. `Trpo::state` → serialise → deserialise → `Trpo::from_state`
//! gives a learner whose later updates are bit-for-bit those of the original, because
//!
//! * every f64 of the learner's vectors is stored exactly: as the string of Rust's shortest
//!   round-trip representation (`{:?}`), parsed back by the correctly rounded `str::parse`.
//!   Strings are exact in every serde format, carry NaN and infinities (JSON numbers
//!   cannot), and do not depend on a format's float parser being correctly rounded;
//! * no random-number-generator stream has to be saved: every random choice of an update
//!   comes from a generator seeded by [`update_seed`]`(seed, updates_done)`.
//!
//! [`TrpoStateV1`] reads the layout checkpoints had before the run's settings left
//! [`TrpoConfig`].
//!
//! [`update_seed`]: tether_shared::seeds::update_seed

use serde::{Deserialize, Serialize};

use super::distribution::ActionDistribution;
use super::hyperparams::{HyperparamError, TrpoConfig};
use super::policy::PolicyError;

/// Everything a [`super::Trpo`] needs to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrpoState {
    /// Hyperparameters.
    pub config: TrpoConfig,
    /// Seed of the learner's random streams (initialisation, minibatch order): the run's.
    pub seed: u64,
    /// Observation width the policy reads (checked against the caller's on restore).
    pub obs_dim: usize,
    /// Action head (checked against the caller's on restore).
    pub head: ActionDistribution,
    /// Flat policy parameters `[MLP (wire layout), Gaussian log-std]`.
    #[serde(with = "exact_f64s")]
    pub policy_parameters: Vec<f64>,
    /// Flat value-function parameters (same layout as the policy MLP).
    #[serde(with = "exact_f64s")]
    pub value_parameters: Vec<f64>,
    /// The value function's Adam optimiser.
    pub value_optimizer: AdamState,
    /// Running observation statistics; present exactly when
    /// `config.normalize_observations` is set.
    pub normalizer: Option<NormalizerState>,
    /// Updates completed so far (those that returned `Ok`); selects the random stream of
    /// the next update.
    pub updates_done: u64,
}

/// Adam's moment estimates and step count (its rates come from the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamState {
    /// Exponential average of the gradient, one per value parameter.
    #[serde(with = "exact_f64s")]
    pub first_moment: Vec<f64>,
    /// Exponential average of the squared gradient, one per value parameter (≥ 0).
    #[serde(with = "exact_f64s")]
    pub second_moment: Vec<f64>,
    /// Optimiser steps taken (drives the bias correction).
    pub steps: u32,
}

/// Welford statistics of the observation normaliser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizerState {
    /// Observations folded in (≥ 0; an integer below 2⁵³, so a plain number is exact).
    pub count: f64,
    /// Running mean per observation dimension.
    #[serde(with = "exact_f64s")]
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean per dimension (≥ 0).
    #[serde(with = "exact_f64s")]
    pub m2: Vec<f64>,
}

/// Why a saved state cannot become a learner.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// The saved hyperparameters are out of range.
    #[error("saved learner config is invalid: {0}")]
    Config(#[from] HyperparamError),
    /// The state was saved for a different plant shape.
    #[error("saved learner is for {saved}, the plant has {expected}")]
    ShapeMismatch {
        /// What the state holds.
        saved: String,
        /// What the caller asked for.
        expected: String,
    },
    /// The policy parameters do not fit the configured architecture or are not finite.
    #[error("saved {0}")]
    Policy(#[from] PolicyError),
    /// A vector of the wrong length.
    #[error("saved {what} has {found} values, the architecture needs {expected}")]
    WrongLength {
        /// Which vector.
        what: &'static str,
        /// Length found.
        found: usize,
        /// Length required.
        expected: usize,
    },
    /// A NaN, an infinity, or a value outside its domain (negative variance, …).
    #[error("saved {what}[{index}] = {value} is invalid: {expected}")]
    InvalidValue {
        /// Which vector or field.
        what: &'static str,
        /// Position in it (0 for a scalar).
        index: usize,
        /// The value.
        value: f64,
        /// What is allowed.
        expected: &'static str,
    },
    /// The normaliser is present without the config asking for one, or missing.
    #[error("saved normaliser {0}")]
    NormalizerMismatch(&'static str),
}

/// A [`TrpoState`] as checkpoint format 1 stored it: the hyperparameters still carried the
/// run's `steps_per_iteration`, `total_steps` and `seed` as their last three fields.
/// postcard writes a struct as its fields in order with no framing, so the old config
/// followed by those three fields reads exactly the old bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrpoStateV1 {
    /// Hyperparameters, without the three run-level fields that follow.
    pub config: TrpoConfig,
    /// Was `config.steps_per_iteration`; now the run configuration's.
    pub steps_per_iteration: usize,
    /// Was `config.total_steps`; now the run configuration's.
    pub total_steps: usize,
    /// Was `config.seed`: the learner's seed.
    pub seed: u64,
    /// As [`TrpoState::obs_dim`].
    pub obs_dim: usize,
    /// As [`TrpoState::head`].
    pub head: ActionDistribution,
    /// As [`TrpoState::policy_parameters`].
    #[serde(with = "exact_f64s")]
    pub policy_parameters: Vec<f64>,
    /// As [`TrpoState::value_parameters`].
    #[serde(with = "exact_f64s")]
    pub value_parameters: Vec<f64>,
    /// As [`TrpoState::value_optimizer`].
    pub value_optimizer: AdamState,
    /// As [`TrpoState::normalizer`].
    pub normalizer: Option<NormalizerState>,
    /// As [`TrpoState::updates_done`].
    pub updates_done: u64,
}

impl From<TrpoStateV1> for TrpoState {
    fn from(old: TrpoStateV1) -> Self {
        TrpoState {
            config: old.config,
            seed: old.seed,
            obs_dim: old.obs_dim,
            head: old.head,
            policy_parameters: old.policy_parameters,
            value_parameters: old.value_parameters,
            value_optimizer: old.value_optimizer,
            normalizer: old.normalizer,
            updates_done: old.updates_done,
        }
    }
}

/// Serde adapter: a `Vec<f64>` as a sequence of strings in Rust's shortest round-trip
/// form (`"0.30000000000000004"`, `"5e-324"`, `"NaN"`), parsed back bit-exactly.
mod exact_f64s {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| format!("{v:?}")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| {
                text.parse::<f64>()
                    .map_err(|e| D::Error::custom(format!("`{text}` is not a number: {e}")))
            })
            .collect()
    }
}

/// Checks a vector's length and that every value is finite and satisfies `ok`.
pub(crate) fn check_vector(
    what: &'static str,
    values: &[f64],
    expected_len: usize,
    ok: impl Fn(f64) -> bool,
    expected: &'static str,
) -> Result<(), StateError> {
    if values.len() != expected_len {
        return Err(StateError::WrongLength {
            what,
            found: values.len(),
            expected: expected_len,
        });
    }
    match values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || !ok(**v))
    {
        Some((index, &value)) => Err(StateError::InvalidValue {
            what,
            index,
            value,
            expected,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_vectors_round_trip_through_json_bit_for_bit() {
        let values = [
            0.1 + 0.2,
            1.0 / 3.0,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,          // subnormal
            5e-324,                           // smallest subnormal
            -f64::MIN_POSITIVE * 0.999_999_9, // subnormal
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e300 * 1.000_000_000_000_1,
            std::f64::consts::PI,
            -123_456_789.123_456_78,
        ];
        let mut all = values.to_vec();
        // A sweep of pseudo-random bit patterns, NaN and infinities included.
        let mut x = 0x1234_5678_9abc_def0_u64;
        all.extend((0..20_000).map(|_| {
            x = tether_shared::seeds::mix64(x);
            f64::from_bits(x)
        }));
        all.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        let state = NormalizerState {
            count: 3.0,
            mean: all.clone(),
            m2: Vec::new(),
        };
        let json = serde_json::to_string(&state).expect("strings always serialise");
        let back: NormalizerState = serde_json::from_str(&json).expect("own output");
        assert_eq!(back.mean.len(), all.len());
        for (a, b) in all.iter().zip(&back.mean) {
            // NaN payloads are not kept (restoring refuses NaN anyway).
            match a.is_nan() {
                true => assert!(b.is_nan()),
                false => assert_eq!(a.to_bits(), b.to_bits(), "{a:e} → {b:e}"),
            }
        }
        assert!(
            json.contains(r#""0.30000000000000004""#),
            "{}",
            &json[..200]
        );
        assert!(json.contains(r#""5e-324""#));
    }

    /// The workspace builds serde_json with `float_roundtrip`, so plain JSON numbers are
    /// exact too (without it this 17-digit number came back one ulp off); the adapter is
    /// still what keeps NaN and infinities, which JSON numbers cannot carry.
    #[test]
    fn workspace_serde_json_parses_numbers_exactly() {
        let v: f64 = 1e300 * 1.000_000_000_000_1;
        let json = serde_json::to_string(&v).expect("finite");
        let back: f64 = serde_json::from_str(&json).expect("parses");
        assert_eq!(v.to_bits(), back.to_bits());
        assert!(serde_json::to_string(&f64::NAN).map_or(true, |s| s == "null"));
    }

    #[test]
    fn check_vector_names_the_problem() {
        assert_eq!(
            check_vector("v", &[1.0, 2.0], 2, |_| true, "finite"),
            Ok(())
        );
        assert!(matches!(
            check_vector("v", &[1.0], 2, |_| true, "finite"),
            Err(StateError::WrongLength {
                found: 1,
                expected: 2,
                ..
            })
        ));
        let err = check_vector("v", &[1.0, f64::NAN], 2, |_| true, "finite").expect_err("NaN");
        assert!(err.to_string().contains("saved v[1] = NaN"), "{err}");
        assert!(check_vector("m2", &[-1.0], 1, |v| v >= 0.0, "≥ 0").is_err());
    }
}
