//! TRPO hyperparameters, every one documented where it is declared. Defaults are
//! SB3-contrib's TRPO defaults; `for_plant` applies rl-zoo3's tuned settings.

use serde::{Deserialize, Serialize};

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
    /// Hidden layer widths of the policy MLP (≤ 4 layers for the device).
    pub policy_hidden: Vec<usize>,
    /// Hidden layer widths of the value MLP.
    pub value_hidden: Vec<usize>,
    /// Initial Gaussian log standard deviation (natural log of action units).
    pub log_std_init: f64,
    /// Keep a running observation normaliser and export it with the policy.
    pub normalize_observations: bool,
    /// Transitions per iteration, summed over all devices.
    pub steps_per_iteration: usize,
    /// Transitions for the whole run.
    pub total_steps: usize,
    /// Seed of every random choice of the learner (initialisation, minibatch order).
    pub seed: u64,
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
            steps_per_iteration: 2048,
            total_steps: 1_000_000,
            seed: 0,
        }
    }
}

/// A config that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// No tuned settings for this plant name.
    #[error("no TRPO settings for plant `{0}` (known: pendulum, cartpole, qube)")]
    UnknownPlant(String),
    /// A value outside its meaningful range.
    #[error("`{field}` = {value} is out of range: {expected}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value, formatted.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl TrpoConfig {
    /// rl-zoo3's tuned TRPO settings for a plant, SB3-contrib defaults elsewhere.
    ///
    /// * `pendulum` (Pendulum-v1): 2 envs × 1024 steps, γ 0.9, 15 critic epochs of 128.
    /// * `cartpole` (CartPole-v1): 2 envs × 512 steps, damping 1e-3, λ 0.98, γ 0.99,
    ///   20 critic epochs of 512.
    /// * `qube` (Quanser QUBE-Servo 2, our choice, not from the zoo): 250 Hz control and
    ///   5 s episodes of 1250 steps. γ 0.995 gives a 200-step (0.8 s) horizon, about one
    ///   swing of the pendulum; λ 0.97; 10 000 steps per iteration = 8 full episodes (40 s
    ///   of plant time, so two devices refresh the policy every 20 s: with 4 episodes per
    ///   update some seeds kept one evaluation start that failed); 10 critic epochs of 256;
    ///   observation normalisation on, because the filtered velocities reach tens of rad/s
    ///   while the angle terms are in [−1, 1] (unnormalised, they saturate the first tanh
    ///   layer); 3 M steps (≈ 3.3 h of plant time on one rig, about 1.7 h with two): at
    ///   2 M some seeds already balance, others still wobble about the top; README,
    ///   "Results", has what each seed reaches.
    pub fn for_plant(plant: &str) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        match plant {
            "pendulum" => Ok(Self {
                steps_per_iteration: 2 * 1024,
                gamma: 0.9,
                n_critic_updates: 15,
                critic_batch_size: 128,
                total_steps: 100_000,
                ..defaults
            }),
            "cartpole" => Ok(Self {
                steps_per_iteration: 2 * 512,
                cg_damping: 1e-3,
                gae_lambda: 0.98,
                gamma: 0.99,
                critic_learning_rate: 1e-3,
                n_critic_updates: 20,
                critic_batch_size: 512,
                total_steps: 100_000,
                ..defaults
            }),
            "qube" => Ok(Self {
                steps_per_iteration: 10_000,
                gamma: 0.995,
                gae_lambda: 0.97,
                n_critic_updates: 10,
                critic_batch_size: 256,
                normalize_observations: true,
                total_steps: 3_000_000,
                ..defaults
            }),
            other => Err(ConfigError::UnknownPlant(other.to_string())),
        }
    }

    /// Checks every range the learner relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, field, value: String, expected| match ok {
            true => Ok(()),
            false => Err(ConfigError::OutOfRange {
                field,
                value,
                expected,
            }),
        };
        check(
            self.target_kl > 0.0 && self.target_kl.is_finite(),
            "target_kl",
            self.target_kl.to_string(),
            "> 0",
        )?;
        check(
            self.cg_max_steps > 0,
            "cg_max_steps",
            self.cg_max_steps.to_string(),
            "≥ 1",
        )?;
        check(
            self.cg_damping >= 0.0 && self.cg_damping.is_finite(),
            "cg_damping",
            self.cg_damping.to_string(),
            "≥ 0",
        )?;
        check(
            self.cg_tolerance >= 0.0,
            "cg_tolerance",
            self.cg_tolerance.to_string(),
            "≥ 0",
        )?;
        check(
            self.line_search_shrink > 0.0 && self.line_search_shrink < 1.0,
            "line_search_shrink",
            self.line_search_shrink.to_string(),
            "in (0, 1)",
        )?;
        check(
            (0.0..=1.0).contains(&self.gamma),
            "gamma",
            self.gamma.to_string(),
            "in [0, 1]",
        )?;
        check(
            (0.0..=1.0).contains(&self.gae_lambda),
            "gae_lambda",
            self.gae_lambda.to_string(),
            "in [0, 1]",
        )?;
        check(
            self.critic_batch_size > 0,
            "critic_batch_size",
            self.critic_batch_size.to_string(),
            "≥ 1",
        )?;
        check(
            self.critic_learning_rate > 0.0 && self.critic_learning_rate.is_finite(),
            "critic_learning_rate",
            self.critic_learning_rate.to_string(),
            "> 0",
        )?;
        check(
            self.sub_sampling_factor > 0,
            "sub_sampling_factor",
            self.sub_sampling_factor.to_string(),
            "≥ 1",
        )?;
        check(
            !self.policy_hidden.is_empty()
                && self.policy_hidden.len() <= 4
                && self.policy_hidden.iter().all(|&w| w > 0),
            "policy_hidden",
            format!("{:?}", self.policy_hidden),
            "1 to 4 non-zero widths (device limit)",
        )?;
        check(
            self.value_hidden.iter().all(|&w| w > 0),
            "value_hidden",
            format!("{:?}", self.value_hidden),
            "non-zero widths",
        )?;
        check(
            self.log_std_init.is_finite(),
            "log_std_init",
            self.log_std_init.to_string(),
            "finite",
        )?;
        check(
            self.steps_per_iteration > 0,
            "steps_per_iteration",
            self.steps_per_iteration.to_string(),
            "≥ 1",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plant_presets_follow_the_zoo_and_validate() {
        let pendulum = TrpoConfig::for_plant("pendulum").expect("known");
        assert_eq!(
            (
                pendulum.steps_per_iteration,
                pendulum.gamma,
                pendulum.n_critic_updates
            ),
            (2048, 0.9, 15)
        );
        let cartpole = TrpoConfig::for_plant("cartpole").expect("known");
        assert_eq!(
            (
                cartpole.steps_per_iteration,
                cartpole.cg_damping,
                cartpole.critic_batch_size
            ),
            (1024, 1e-3, 512)
        );
        let qube = TrpoConfig::for_plant("qube").expect("known");
        assert!(qube.normalize_observations);
        assert_eq!(
            (qube.total_steps, qube.steps_per_iteration),
            (3_000_000, 10_000)
        );
        for plant in ["pendulum", "cartpole", "qube"] {
            assert_eq!(
                TrpoConfig::for_plant(plant).expect("known").validate(),
                Ok(())
            );
        }
        assert!(matches!(
            TrpoConfig::for_plant("segway"),
            Err(ConfigError::UnknownPlant(_))
        ));
    }

    #[test]
    fn serde_fills_defaults_and_refuses_unknown_keys() {
        let config: TrpoConfig = serde_json::from_str(r#"{"target_kl": 0.02}"#).expect("valid");
        assert_eq!(config.target_kl, 0.02);
        assert_eq!(config.cg_max_steps, 15);
        assert!(serde_json::from_str::<TrpoConfig>(r#"{"target_kl_typo": 0.02}"#).is_err());
        let bad = TrpoConfig {
            line_search_shrink: 1.5,
            ..TrpoConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::OutOfRange {
                field: "line_search_shrink",
                ..
            })
        ));
    }
}
