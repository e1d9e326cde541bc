//! TRPO hyperparameters, every one documented where it is declared. Defaults are
//! SB3-contrib's TRPO defaults; the tuned settings for each plant are in
//! `training::preset`. The run's own settings (seed, step counts) live in the run
//! configuration, not here.

use serde::{Deserialize, Serialize};
use tether_shared::policy::MAX_HIDDEN_LAYERS;

/// Hyperparameters of the learner. Unknown keys in a config file are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrpoConfig {
    /// Trust-region radius δ: the largest mean KL(old ‖ new) a step may cause, nats.
    pub target_kl: f64,
    /// Conjugate-gradient iterations (Fisher-vector products) per update.
    pub cg_max_steps: usize,
    /// Tikhonov damping added to the Fisher (`F + damping·I`) for the CG solve.
    pub cg_damping: f64,
    /// CG stops when the squared residual |b − Fx|² falls below this.
    pub cg_tolerance: f64,
    /// Factor the step shrinks by at each line-search backtrack.
    pub line_search_shrink: f64,
    /// Backtracks after the full step before the update is refused.
    pub line_search_max_backtracks: usize,
    /// Discount factor γ per control step.
    pub gamma: f64,
    /// GAE λ: bias/variance trade-off of the advantage estimate.
    pub gae_lambda: f64,
    /// Value-function epochs (passes over the batch) per iteration.
    pub n_critic_updates: usize,
    /// Value-function minibatch size, transitions.
    pub critic_batch_size: usize,
    /// Value-function Adam learning rate.
    pub critic_learning_rate: f64,
    /// Standardise advantages to mean 0, std 1 before the policy step.
    pub normalize_advantage: bool,
    /// Use every k-th transition for the Fisher-vector products (1 = all).
    pub sub_sampling_factor: usize,
    /// Hidden layer widths of the policy MLP (at most
    /// [`MAX_HIDDEN_LAYERS`] layers, the device's limit).
    pub policy_hidden: Vec<usize>,
    /// Hidden layer widths of the value MLP.
    pub value_hidden: Vec<usize>,
    /// Initial Gaussian log standard deviation (natural log of action units); with gSDE
    /// the initial value of every entry of the log-std matrix (natural log of action units
    /// per unit of feature).
    pub log_std_init: f64,
    /// Keep a running observation normaliser and export it with the policy.
    pub normalize_observations: bool,
    /// Explore with generalized state-dependent exploration (gSDE, as Stable-Baselines3's
    /// `use_sde`): the noise is a held random matrix applied to the policy's last hidden
    /// features, drawn on the device. Continuous action spaces only.
    pub use_sde: bool,
    /// gSDE: control steps between two draws of the noise matrix on the device, counted
    /// over the collection round; 0 or less: one draw per round (SB3's `sde_sample_freq`).
    pub sde_sample_freq: i64,
    /// gSDE: one log-std per feature and action (true, SB3's default) instead of one per
    /// feature shared by every action.
    pub full_std: bool,
    /// gSDE: σ = `expln(log_std)` (grows like a logarithm above 0) instead of `exp`.
    pub use_expln: bool,
}

impl Default for TrpoConfig {
    fn default() -> Self {
        Self {
            target_kl: 0.01,
            cg_max_steps: 15,
            cg_damping: 0.1,
            cg_tolerance: 1e-10,
            line_search_shrink: 0.8,
            line_search_max_backtracks: 10,
            gamma: 0.99,
            gae_lambda: 0.95,
            n_critic_updates: 10,
            critic_batch_size: 128,
            critic_learning_rate: 1e-3,
            normalize_advantage: true,
            sub_sampling_factor: 1,
            policy_hidden: vec![64, 64],
            value_hidden: vec![64, 64],
            log_std_init: 0.0,
            normalize_observations: false,
            use_sde: false,
            sde_sample_freq: -1,
            full_std: true,
            use_expln: false,
        }
    }
}

/// A hyperparameter outside its meaningful range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("`{field}` = {value} is out of range: {expected}")]
pub struct HyperparamError {
    /// Field name.
    pub field: &'static str,
    /// The value, formatted.
    pub value: String,
    /// What is allowed.
    pub expected: String,
}

/// `Ok` when `ok`, else the error naming `field`, its `value` and what is `expected`.
fn check(
    ok: bool,
    field: &'static str,
    value: impl ToString,
    expected: impl Into<String>,
) -> Result<(), HyperparamError> {
    match ok {
        true => Ok(()),
        false => Err(HyperparamError {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }),
    }
}

/// Positive and finite.
fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

impl TrpoConfig {
    /// Checks every range the learner relies on; the first value out of range is the error.
    pub fn validate(&self) -> Result<(), HyperparamError> {
        self.validate_policy_step()?;
        self.validate_advantages_and_critic()?;
        self.validate_networks()?;
        let freq = self.sde_sample_freq;
        check(
            freq <= i64::from(u16::MAX),
            "sde_sample_freq",
            freq,
            format!("at most {} (or ≤ 0: once per collection round)", u16::MAX),
        )
    }

    /// Control steps between two noise-matrix draws as the device's gSDE head carries it:
    /// 0 for once per collection round.
    pub fn sde_resample_every(&self) -> u16 {
        u16::try_from(self.sde_sample_freq.max(0)).unwrap_or(u16::MAX)
    }

    /// Trust region, conjugate gradient and line search.
    fn validate_policy_step(&self) -> Result<(), HyperparamError> {
        check(positive(self.target_kl), "target_kl", self.target_kl, "> 0")?;
        check(
            self.cg_max_steps > 0,
            "cg_max_steps",
            self.cg_max_steps,
            "≥ 1",
        )?;
        let damping = self.cg_damping;
        check(
            damping >= 0.0 && damping.is_finite(),
            "cg_damping",
            damping,
            "≥ 0",
        )?;
        check(
            self.cg_tolerance >= 0.0,
            "cg_tolerance",
            self.cg_tolerance,
            "≥ 0",
        )?;
        let shrink = self.line_search_shrink;
        check(
            shrink > 0.0 && shrink < 1.0,
            "line_search_shrink",
            shrink,
            "in (0, 1)",
        )?;
        let factor = self.sub_sampling_factor;
        check(factor > 0, "sub_sampling_factor", factor, "≥ 1")
    }

    /// Discounting, GAE and the value function's optimiser.
    fn validate_advantages_and_critic(&self) -> Result<(), HyperparamError> {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        check(unit(self.gamma), "gamma", self.gamma, "in [0, 1]")?;
        check(
            unit(self.gae_lambda),
            "gae_lambda",
            self.gae_lambda,
            "in [0, 1]",
        )?;
        let batch = self.critic_batch_size;
        check(batch > 0, "critic_batch_size", batch, "≥ 1")?;
        let rate = self.critic_learning_rate;
        check(positive(rate), "critic_learning_rate", rate, "> 0")
    }

    /// Network shapes (the policy's must fit the device) and the initial log-std.
    fn validate_networks(&self) -> Result<(), HyperparamError> {
        let policy = &self.policy_hidden;
        check(
            (1..=MAX_HIDDEN_LAYERS).contains(&policy.len()) && policy.iter().all(|&w| w > 0),
            "policy_hidden",
            format!("{policy:?}"),
            format!("1 to {MAX_HIDDEN_LAYERS} non-zero widths (device limit)"),
        )?;
        let value = &self.value_hidden;
        check(
            value.iter().all(|&w| w > 0),
            "value_hidden",
            format!("{value:?}"),
            "non-zero widths",
        )?;
        let log_std = self.log_std_init;
        check(log_std.is_finite(), "log_std_init", log_std, "finite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_fills_defaults_and_refuses_unknown_keys() {
        let config: TrpoConfig = serde_json::from_str(r#"{"target_kl": 0.02}"#).expect("valid");
        assert_eq!(config.target_kl, 0.02);
        assert_eq!(config.cg_max_steps, 15);
        assert!(serde_json::from_str::<TrpoConfig>(r#"{"target_kl_typo": 0.02}"#).is_err());
        for run_level in ["seed", "total_steps", "steps_per_iteration"] {
            let text = format!(r#"{{"{run_level}": 1}}"#);
            assert!(
                serde_json::from_str::<TrpoConfig>(&text).is_err(),
                "`{run_level}` is a run setting, not the learner's"
            );
        }
        assert_eq!(TrpoConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_first_field_out_of_range() {
        let field = |change: &dyn Fn(&mut TrpoConfig)| {
            let mut config = TrpoConfig::default();
            change(&mut config);
            config.validate().map_err(|e| e.field)
        };
        assert_eq!(
            field(&|c| c.line_search_shrink = 1.5),
            Err("line_search_shrink")
        );
        assert_eq!(field(&|c| c.target_kl = f64::NAN), Err("target_kl"));
        assert_eq!(field(&|c| c.gamma = 1.01), Err("gamma"));
        assert_eq!(
            field(&|c| c.critic_batch_size = 0),
            Err("critic_batch_size")
        );
        assert_eq!(field(&|c| c.value_hidden = vec![8, 0]), Err("value_hidden"));
        assert_eq!(
            field(&|c| c.log_std_init = f64::INFINITY),
            Err("log_std_init")
        );
        assert_eq!(field(&|c| c.policy_hidden.clear()), Err("policy_hidden"));
        assert_eq!(
            field(&|c| c.sde_sample_freq = 70_000),
            Err("sde_sample_freq")
        );
        for (freq, every) in [(-1, 0), (0, 0), (4, 4), (65_535, 65_535)] {
            let config = TrpoConfig {
                sde_sample_freq: freq,
                ..TrpoConfig::default()
            };
            assert_eq!(config.validate(), Ok(()));
            assert_eq!(config.sde_resample_every(), every);
        }
        assert_eq!(
            field(&|c| c.policy_hidden = vec![8; MAX_HIDDEN_LAYERS]),
            Ok(())
        );
        let too_deep = TrpoConfig {
            policy_hidden: vec![8; MAX_HIDDEN_LAYERS + 1],
            ..TrpoConfig::default()
        };
        let err = too_deep
            .validate()
            .expect_err("deeper than the device allows");
        assert!(
            err.to_string()
                .contains(&format!("1 to {MAX_HIDDEN_LAYERS} non-zero widths")),
            "{err}"
        );
    }
}
