//! The TRPO learner: one `update` per batch of trajectories, reading like the paper's
//! pseudo-code — estimate advantages, take the surrogate gradient, solve `F s = g` by
//! conjugate gradient on exact Fisher-vector products, line-search the trust-region step,
//! then fit the value function.

use std::time::Instant;

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tether_shared::PolicySpec;
use tether_shared::seeds::update_seed;

use super::batch::{BatchError, EpisodeEnding, RolloutBatch};
use super::conjugate_gradient::{CgTermination, conjugate_gradient};
use super::device_format::{DeviceFormatError, export_f32, shared_spec};
use super::distribution::ActionDistribution;
use super::fisher::FisherVectorProduct;
use super::gae::generalized_advantages;
use super::hyperparams::{HyperparamError, TrpoConfig};
use super::learner_state::{StateError, TrpoState};
use super::line_search::{CandidateEvaluation, LineSearchSettings, full_step, line_search};
use super::normalizer::ObservationNormalizer;
use super::policy::Policy;
use super::surrogate::{SurrogateBatch, mean_entropy, mean_kl, surrogate, surrogate_gradient};
use super::value::ValueFunction;

/// Advantages whose standard deviation is below this carry no signal to normalise.
const MIN_ADVANTAGE_STD: f64 = 1e-8;

/// Why an update could not even start. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UpdateError {
    /// The batch is empty, malformed or holds non-finite values.
    #[error("invalid rollout batch: {0}")]
    InvalidBatch(#[from] BatchError),
}

/// Wall-clock split of one update, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct UpdateTimings {
    /// Values, GAE, old log-probs and the surrogate gradient.
    pub gradient_seconds: f64,
    /// Fisher set-up, conjugate gradient and the curvature sᵀFs.
    pub cg_seconds: f64,
    /// Candidate evaluations of the line search.
    pub line_search_seconds: f64,
    /// Value-function fit.
    pub value_fit_seconds: f64,
}

/// What one update did; every field is meaningful even when the policy step was skipped.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpdateReport {
    /// Mean KL(old ‖ new) of the applied step, nats (0 when no step was applied).
    pub kl: f64,
    /// Mean policy entropy after the update, nats.
    pub entropy: f64,
    /// Linear prediction gᵀ·step of the surrogate gain of the last step tried.
    pub expected_improvement: f64,
    /// Measured surrogate gain of the last step tried.
    pub actual_improvement: f64,
    /// actual / expected (0 when undefined).
    pub improvement_ratio: f64,
    /// Line-search backtracks performed.
    pub line_search_steps: usize,
    /// Whether new policy parameters were applied.
    pub accepted: bool,
    /// Value MSE over the last critic epoch.
    pub value_loss: f64,
    /// Explained variance of the value predictions used for the advantages (NaN when the
    /// returns have no variance).
    pub explained_variance: f64,
    /// Fisher-vector products spent in conjugate gradient.
    pub cg_iterations: usize,
    /// Why the policy step was skipped or refused, in words; `None` when it was applied.
    pub skipped_reason: Option<String>,
    /// Transitions in the batch.
    pub samples: usize,
    /// Time split.
    pub timings: UpdateTimings,
}

/// Advantage estimates of a batch, aligned with its transitions.
struct Advantages {
    advantages: DVector<f64>,
    returns: DVector<f64>,
    /// V(s) of every transition, before the value fit.
    values: DVector<f64>,
}

/// The TRPO learner: policy, value function, optional observation normaliser.
///
/// Every random choice of an update (the critic's minibatch order) is drawn from a
/// generator seeded by `(seed, updates_done)`, so the learner's whole future is a
/// function of the plain data in [`TrpoState`].
#[derive(Clone, Debug)]
pub struct Trpo {
    config: TrpoConfig,
    seed: u64,
    policy: Policy,
    value: ValueFunction,
    normalizer: Option<ObservationNormalizer>,
    updates_done: u64,
}

impl Trpo {
    /// A fresh learner for observations of `obs_dim` values and the given action head,
    /// whose random streams (initialisation, minibatch order) all derive from `seed`.
    pub fn new(
        obs_dim: usize,
        head: ActionDistribution,
        config: TrpoConfig,
        seed: u64,
    ) -> Result<Self, HyperparamError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let policy = Policy::new(
            obs_dim,
            &config.policy_hidden,
            head,
            config.log_std_init,
            &mut rng,
        );
        let value = ValueFunction::new(
            obs_dim,
            &config.value_hidden,
            config.critic_learning_rate,
            &mut rng,
        );
        let normalizer = config
            .normalize_observations
            .then(|| ObservationNormalizer::new(obs_dim));
        Ok(Self {
            config,
            seed,
            policy,
            value,
            normalizer,
            updates_done: 0,
        })
    }

    /// Everything that influences future updates, as plain data for a checkpoint.
    pub fn state(&self) -> TrpoState {
        let (value_parameters, value_optimizer) = self.value.state();
        TrpoState {
            config: self.config.clone(),
            seed: self.seed,
            obs_dim: self.policy.obs_dim(),
            head: self.policy.head(),
            policy_parameters: self.policy.parameters().as_slice().to_vec(),
            value_parameters,
            value_optimizer,
            normalizer: self.normalizer.as_ref().map(ObservationNormalizer::state),
            updates_done: self.updates_done,
        }
    }

    /// The learner a checkpoint describes, for a plant with `obs_dim` observations and the
    /// action `head`. Refuses (with the reason) a state saved for another shape, an invalid
    /// config, vectors whose length does not fit the configured networks, and non-finite or
    /// out-of-domain values. Later updates are bit-for-bit those the saved learner would
    /// have made.
    pub fn from_state(
        obs_dim: usize,
        head: ActionDistribution,
        state: TrpoState,
    ) -> Result<Self, StateError> {
        state.config.validate()?;
        if state.obs_dim != obs_dim || state.head != head {
            return Err(StateError::ShapeMismatch {
                saved: format!("{} observations and {:?}", state.obs_dim, state.head),
                expected: format!("{obs_dim} observations and {head:?}"),
            });
        }
        let config = state.config;
        // Architecture only: the random initial weights are replaced below.
        let mut policy = Policy::new(
            obs_dim,
            &config.policy_hidden,
            head,
            config.log_std_init,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        policy.set_parameters(DVector::from_vec(state.policy_parameters))?;
        let value = ValueFunction::from_state(
            obs_dim,
            &config.value_hidden,
            config.critic_learning_rate,
            &state.value_parameters,
            &state.value_optimizer,
        )?;
        let normalizer = match (config.normalize_observations, &state.normalizer) {
            (true, Some(saved)) => Some(ObservationNormalizer::from_state(obs_dim, saved)?),
            (false, None) => None,
            (true, None) => {
                return Err(StateError::NormalizerMismatch(
                    "is missing but the config normalises observations",
                ));
            }
            (false, Some(_)) => {
                return Err(StateError::NormalizerMismatch(
                    "is present but the config does not normalise observations",
                ));
            }
        };
        Ok(Self {
            config,
            seed: state.seed,
            policy,
            value,
            normalizer,
            updates_done: state.updates_done,
        })
    }

    /// Updates completed so far (each `Ok` from [`Trpo::update`] counts one).
    pub fn updates_done(&self) -> u64 {
        self.updates_done
    }

    /// The hyperparameters.
    pub fn config(&self) -> &TrpoConfig {
        &self.config
    }

    /// The current policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current value function.
    pub fn value_function(&self) -> &ValueFunction {
        &self.value
    }

    /// The advantages and the values V(s) the next update would compute for `batch`, per
    /// transition in batch order (tests of what the learner makes of its episodes).
    #[cfg(test)]
    pub(crate) fn advantages_for(&self, batch: &RolloutBatch) -> (Vec<f64>, Vec<f64>) {
        let observations = self.normalize(&batch.observation_matrix());
        let estimate = self.estimate_advantages(batch, &observations);
        (
            estimate.advantages.as_slice().to_vec(),
            estimate.values.as_slice().to_vec(),
        )
    }

    /// The observation normaliser, when enabled.
    pub fn normalizer(&self) -> Option<&ObservationNormalizer> {
        self.normalizer.as_ref()
    }

    /// The policy as the device runs it: f32 in the shared wire layout, normaliser first
    /// when enabled.
    pub fn export_f32(&self) -> Vec<f32> {
        export_f32(&self.policy, self.normalizer.as_ref())
    }

    /// The shared spec the device reads [`Trpo::export_f32`] with (a gSDE head carries
    /// the configured `sde_sample_freq`).
    pub fn device_spec(&self) -> Result<PolicySpec, DeviceFormatError> {
        shared_spec(
            &self.policy,
            self.normalizer.is_some(),
            self.config.sde_resample_every(),
        )
    }

    /// One TRPO iteration on a batch produced by the current policy. A malformed batch is an
    /// error and changes nothing; a batch that gives no usable step (zero advantages,
    /// degenerate curvature, no line-search step within the trust region) leaves the
    /// policy unchanged and says why in `skipped_reason` (the value function is still fit).
    pub fn update(&mut self, batch: &RolloutBatch) -> Result<UpdateReport, UpdateError> {
        batch.check_shape(self.policy.obs_dim(), self.policy.head())?;
        let mut report = UpdateReport {
            samples: batch.len(),
            ..UpdateReport::default()
        };
        let clock = Instant::now();
        let raw_observations = batch.observation_matrix();
        let observations = self.normalize(&raw_observations);
        let actions = batch.action_matrix();
        let estimate = self.estimate_advantages(batch, &observations);
        report.timings.gradient_seconds = clock.elapsed().as_secs_f64();

        let advantages = self.prepare_advantages(&estimate.advantages);
        let mut rng = ChaCha8Rng::seed_from_u64(update_seed(self.seed, self.updates_done));
        let Self {
            config,
            policy,
            value,
            ..
        } = self;
        // The value fit reads only the returns estimated above and the old value network, so
        // it runs beside the policy step (on the second core) instead of after it; both are
        // deterministic on their own, so the result does not depend on the schedule.
        let ((), (fit, value_fit_seconds)) = rayon::join(
            || match advantages {
                Ok(advantages) => {
                    let samples = Samples {
                        observations: &observations,
                        actions: &actions,
                        advantages: &advantages,
                    };
                    policy_step(policy, config, samples, &mut report)
                }
                Err(reason) => {
                    report.skipped_reason = Some(reason);
                    let unchanged = policy.evaluate(policy.parameters().as_slice(), &observations);
                    report.entropy = mean_entropy(policy, &unchanged);
                }
            },
            || {
                let clock = Instant::now();
                let fit = value.fit(
                    &observations,
                    &estimate.returns,
                    &estimate.values,
                    config.n_critic_updates,
                    config.critic_batch_size,
                    &mut rng,
                );
                (fit, clock.elapsed().as_secs_f64())
            },
        );
        report.value_loss = fit.value_loss;
        report.explained_variance = fit.explained_variance;
        report.timings.value_fit_seconds = value_fit_seconds;

        if let Some(normalizer) = &mut self.normalizer {
            normalizer.update(&raw_observations);
        }
        self.updates_done += 1;
        Ok(report)
    }

    /// Observations as the networks see them (normalised with the frozen statistics).
    fn normalize(&self, raw: &DMatrix<f64>) -> DMatrix<f64> {
        match &self.normalizer {
            Some(normalizer) => normalizer.normalize(raw),
            None => raw.clone(),
        }
    }

    /// V of every observation, then GAE per episode (bootstrapping truncated episodes).
    fn estimate_advantages(&self, batch: &RolloutBatch, observations: &DMatrix<f64>) -> Advantages {
        let values = self.value.predict(observations);
        let mut advantages = Vec::with_capacity(values.len());
        let mut returns = Vec::with_capacity(values.len());
        for episode in batch.episodes() {
            let span = episode.start..episode.start + episode.rewards.len();
            let value_after = match episode.ending {
                EpisodeEnding::Terminated => 0.0,
                EpisodeEnding::Truncated { final_obs } => {
                    let x = DMatrix::from_iterator(
                        final_obs.len(),
                        1,
                        final_obs.iter().map(|&v| f64::from(v)),
                    );
                    self.value.predict(&self.normalize(&x))[0]
                }
            };
            let estimate = generalized_advantages(
                episode.rewards,
                &values.as_slice()[span],
                value_after,
                self.config.gamma,
                self.config.gae_lambda,
            );
            advantages.extend(estimate.advantages);
            returns.extend(estimate.returns);
        }
        Advantages {
            advantages: DVector::from_vec(advantages),
            returns: DVector::from_vec(returns),
            values,
        }
    }

    /// Standardises the advantages when configured; refuses advantages that carry no signal.
    fn prepare_advantages(&self, advantages: &DVector<f64>) -> Result<DVector<f64>, String> {
        if advantages.iter().any(|a| !a.is_finite()) {
            return Err("advantages are not finite (value function diverged?)".into());
        }
        let mean = advantages.mean();
        let std = (advantages.map(|a| (a - mean).powi(2)).mean()).sqrt();
        if std < MIN_ADVANTAGE_STD
            && (self.config.normalize_advantage || mean.abs() < MIN_ADVANTAGE_STD)
        {
            return Err(format!(
                "advantages are constant (mean {mean:e}, std {std:e}): no policy gradient signal"
            ));
        }
        Ok(match self.config.normalize_advantage {
            true => advantages.map(|a| (a - mean) / std),
            false => advantages.clone(),
        })
    }
}

/// What a policy step learns from: observations (normalised), actions and advantages, one
/// column or entry per transition.
#[derive(Clone, Copy)]
struct Samples<'a> {
    observations: &'a DMatrix<f64>,
    actions: &'a DMatrix<f64>,
    advantages: &'a DVector<f64>,
}

/// Wall-clock seconds of the policy step's phases (added to [`UpdateTimings`]).
#[derive(Clone, Copy, Debug, Default)]
struct StepTimings {
    gradient: f64,
    conjugate_gradient: f64,
    line_search: f64,
}

/// Runs `phase`, adding its wall-clock seconds to `seconds`.
fn timed<T>(seconds: &mut f64, phase: impl FnOnce() -> T) -> T {
    let clock = Instant::now();
    let result = phase();
    *seconds += clock.elapsed().as_secs_f64();
    result
}

/// Gradient → conjugate gradient → step scaling → line search → apply; what it did goes
/// into `report` (why no step was applied, when none was; the entropy of the policy it
/// leaves, from the evaluations the step made anyway).
fn policy_step(
    policy: &mut Policy,
    config: &TrpoConfig,
    samples: Samples<'_>,
    report: &mut UpdateReport,
) {
    let mut timings = StepTimings::default();
    let proposal = propose_step(policy, config, samples, &mut timings, report);
    report.timings.gradient_seconds += timings.gradient;
    report.timings.cg_seconds = timings.conjugate_gradient;
    report.timings.line_search_seconds = timings.line_search;
    let applied = proposal.and_then(|step| {
        policy
            .set_parameters(step.parameters)
            .map(|()| (step.kl, step.entropy))
            .map_err(|error| format!("step refused: {error}"))
    });
    match applied {
        Ok((kl, entropy)) => {
            report.accepted = true;
            report.kl = kl;
            report.entropy = entropy;
        }
        Err(reason) => report.skipped_reason = Some(reason),
    }
}

/// A step the line search accepted.
struct AcceptedStep {
    parameters: DVector<f64>,
    /// Mean KL(old ‖ new), nats.
    kl: f64,
    /// Mean entropy of the new policy on the batch, nats.
    entropy: f64,
}

/// The new parameters with their KL from the old policy and their entropy, or why there
/// are none (then `report.entropy` is the unchanged policy's).
fn propose_step(
    policy: &Policy,
    config: &TrpoConfig,
    samples: Samples<'_>,
    timings: &mut StepTimings,
    report: &mut UpdateReport,
) -> Result<AcceptedStep, String> {
    let old_params = policy.parameters();
    let (old, old_log_probs) = timed(&mut timings.gradient, || {
        let old = policy.evaluate(old_params.as_slice(), samples.observations);
        let log_probs = policy.head().log_prob(old.distribution(), samples.actions);
        (old, log_probs)
    });
    report.entropy = mean_entropy(policy, &old);
    let batch = &SurrogateBatch {
        observations: samples.observations,
        actions: samples.actions,
        advantages: samples.advantages,
        old_log_probs: &old_log_probs,
    };
    let gradient = timed(&mut timings.gradient, || {
        surrogate_gradient(policy, old_params.as_slice(), &old, batch)
    });
    check_gradient(&gradient)?;
    let step = timed(&mut timings.conjugate_gradient, || {
        trust_region_step(policy, config, batch.observations, &gradient, report)
    })?;
    let mut last_candidate = None;
    let search = timed(&mut timings.line_search, || {
        let surrogate_old = surrogate(policy, &old, batch);
        let settings = LineSearchSettings {
            max_kl: config.target_kl,
            shrink: config.line_search_shrink,
            max_backtracks: config.line_search_max_backtracks,
        };
        line_search(
            old_params,
            &step,
            &gradient,
            surrogate_old,
            settings,
            |candidate| {
                let new = policy.evaluate(candidate.as_slice(), batch.observations);
                let measured = CandidateEvaluation {
                    surrogate: surrogate(policy, &new, batch),
                    kl: mean_kl(policy, &old, &new),
                };
                // The search stops at the candidate it accepts: the last one evaluated.
                last_candidate = Some(new);
                measured
            },
        )
    });
    report.expected_improvement = search.expected_improvement;
    report.actual_improvement = search.actual_improvement;
    report.improvement_ratio = search.improvement_ratio;
    report.line_search_steps = search.backtracks;
    let kl = search.kl;
    match (search.parameters, last_candidate) {
        (Some(parameters), Some(accepted)) => Ok(AcceptedStep {
            parameters,
            kl,
            entropy: mean_entropy(policy, &accepted),
        }),
        _ => Err(format!(
            "line search found no step with KL ≤ {} and a surrogate gain (last try: KL {kl:.3e}, gain {:.3e})",
            config.target_kl, search.actual_improvement
        )),
    }
}

/// Conjugate gradient on exact Fisher-vector products for the direction `F⁻¹g`, checked,
/// then scaled to the trust region's edge.
fn trust_region_step(
    policy: &Policy,
    config: &TrpoConfig,
    observations: &DMatrix<f64>,
    gradient: &DVector<f64>,
    report: &mut UpdateReport,
) -> Result<DVector<f64>, String> {
    let fisher = FisherVectorProduct::new(
        policy,
        policy.parameters().as_slice(),
        observations,
        config.sub_sampling_factor,
        config.cg_damping,
    );
    let solve = conjugate_gradient(
        |v| fisher.apply(v),
        gradient,
        config.cg_max_steps,
        config.cg_tolerance,
    );
    report.cg_iterations = solve.iterations;
    if matches!(solve.termination, CgTermination::NonFinite) {
        return Err("conjugate gradient met a non-finite product".into());
    }
    let direction = solve.solution;
    let curvature = direction.dot(&fisher.apply(&direction));
    full_step(&direction, curvature, config.target_kl).ok_or_else(|| {
        format!(
            "step curvature sᵀFs = {curvature:e} is not positive (conjugate gradient: {:?} after {} products)",
            solve.termination, solve.iterations
        )
    })
}

/// Whether a surrogate gradient can drive a step; why not, if it cannot.
fn check_gradient(gradient: &DVector<f64>) -> Result<(), String> {
    if gradient.iter().any(|g| !g.is_finite()) {
        Err("surrogate gradient is not finite".into())
    } else if gradient.norm() == 0.0 {
        Err("surrogate gradient is zero".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trpo::batch::Trajectory;
    use crate::trpo::batch::fixtures::trajectory;
    use crate::trpo::mlp::standard_normal;
    use rand::Rng;
    use tether_shared::message::{RecordAction, RecordLayout};

    const TARGET: f64 = 0.5;

    fn learner(normalize_observations: bool) -> Trpo {
        let config = TrpoConfig {
            policy_hidden: vec![16],
            value_hidden: vec![16],
            n_critic_updates: 5,
            normalize_observations,
            ..TrpoConfig::default()
        };
        Trpo::new(
            1,
            ActionDistribution::DiagGaussian { action_dim: 1 },
            config,
            7,
        )
        .expect("valid config")
    }

    /// One-step episodes of the task "act 0.5·obs": reward −(a − 0.5·obs)², actions drawn
    /// from the learner's current policy. Returns the batch and its mean return.
    fn bandit_batch(trpo: &Trpo, rng: &mut ChaCha8Rng, n: usize) -> (RolloutBatch, f64) {
        let sigma = trpo.policy().log_std()[0].exp();
        let mut total = 0.0;
        let mut batch = RolloutBatch::new(LAYOUT);
        for _ in 0..n {
            let obs: f32 = rng.random_range(-1.0..1.0);
            let x = DMatrix::from_element(1, 1, f64::from(obs));
            let x = match trpo.normalizer() {
                Some(norm) => norm.normalize(&x),
                None => x,
            };
            let mean = trpo.policy().outputs(&x)[(0, 0)];
            let action = (mean + sigma * standard_normal(rng)) as f32;
            let reward = -(f64::from(action) - TARGET * f64::from(obs)).powi(2) as f32;
            total += f64::from(reward);
            batch
                .push(&step_episode(obs, action, reward))
                .expect("same layout");
        }
        (batch, total / n as f64)
    }

    /// The records of a one-observation, one-action plant.
    const LAYOUT: RecordLayout = RecordLayout::new(1, RecordAction::Continuous { dim: 1 });

    /// An episode of one step.
    fn step_episode(obs: f32, action: f32, reward: f32) -> Trajectory {
        trajectory(
            LAYOUT,
            &[(&[obs], &[action], reward)],
            EpisodeEnding::Terminated,
        )
    }

    fn batch_of(episodes: &[Trajectory]) -> RolloutBatch {
        let mut batch = RolloutBatch::new(LAYOUT);
        for episode in episodes {
            batch.push(episode).expect("same layout");
        }
        batch
    }

    #[test]
    fn a_few_updates_raise_the_mean_return_on_a_one_step_task() {
        for normalize in [false, true] {
            let mut trpo = learner(normalize);
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let (_, before) = bandit_batch(&trpo, &mut rng, 2000);
            let mut accepted = 0;
            for _ in 0..12 {
                let (batch, _) = bandit_batch(&trpo, &mut rng, 512);
                let report = trpo.update(&batch).expect("valid batch");
                assert!(report.kl <= 0.01 + 1e-12, "{report:?}");
                accepted += usize::from(report.accepted);
            }
            let (_, after) = bandit_batch(&trpo, &mut rng, 2000);
            assert!(accepted >= 10, "only {accepted} steps accepted");
            assert!(after > before + 0.3, "mean return {before:.3} → {after:.3}");
        }
    }

    /// Every f64 of a state as bits, in a fixed order.
    fn state_bits(state: &TrpoState) -> Vec<u64> {
        let normalizer = state.normalizer.as_ref().expect("normalising learner");
        state
            .policy_parameters
            .iter()
            .chain(&state.value_parameters)
            .chain(&state.value_optimizer.first_moment)
            .chain(&state.value_optimizer.second_moment)
            .chain(&normalizer.mean)
            .chain(&normalizer.m2)
            .chain([&normalizer.count])
            .map(|v| v.to_bits())
            .collect()
    }

    /// The value fit runs beside the policy step and the Fisher products are split over
    /// threads: neither may make the result depend on the number of threads.
    #[test]
    fn updates_are_bit_identical_on_one_and_two_threads() {
        let config = TrpoConfig {
            policy_hidden: vec![32, 32],
            value_hidden: vec![32, 32],
            n_critic_updates: 3,
            normalize_observations: true,
            ..TrpoConfig::default()
        };
        let fresh = Trpo::new(
            1,
            ActionDistribution::DiagGaussian { action_dim: 1 },
            config,
            3,
        )
        .expect("valid config");
        // 1500 samples: three Fisher chunks, products wide enough for the f32 kernel.
        let (batch, _) = bandit_batch(&fresh, &mut ChaCha8Rng::seed_from_u64(4), 1500);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            let mut trpo = fresh.clone();
            let report = pool.install(|| trpo.update(&batch)).expect("valid batch");
            assert!(report.accepted, "{report:?}");
            let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
            let state = trpo.state();
            (bits(state.policy_parameters), bits(state.value_parameters))
        };
        let one = run(1);
        assert_eq!(one, run(2));
        let before: Vec<u64> = fresh
            .policy()
            .parameters()
            .iter()
            .map(|p| p.to_bits())
            .collect();
        assert_ne!(one.0, before, "the update changed nothing");
    }

    #[test]
    fn resuming_from_a_json_checkpoint_continues_bit_for_bit() {
        // Batches are drawn from the learner's current policy, so any divergence after the
        // resume would also change the later batches.
        let run = |resume_after: Option<usize>| {
            let mut trpo = learner(true);
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut reports = Vec::new();
            for update in 0..3 {
                if resume_after == Some(update) {
                    let json = serde_json::to_string(&trpo.state()).expect("finite state");
                    let state: TrpoState = serde_json::from_str(&json).expect("own output");
                    assert_eq!(state, trpo.state());
                    trpo = Trpo::from_state(
                        1,
                        ActionDistribution::DiagGaussian { action_dim: 1 },
                        state,
                    )
                    .expect("valid state");
                }
                let (batch, _) = bandit_batch(&trpo, &mut rng, 256);
                reports.push(trpo.update(&batch).expect("valid batch"));
            }
            (trpo.state(), reports)
        };
        let (straight, straight_reports) = run(None);
        let (resumed, resumed_reports) = run(Some(1));
        assert_eq!(straight.updates_done, 3);
        assert_eq!(resumed.updates_done, 3);
        assert_eq!(
            straight.value_optimizer.steps,
            resumed.value_optimizer.steps
        );
        assert!(straight.value_optimizer.steps > 0);
        assert_eq!(state_bits(&straight), state_bits(&resumed));
        for (a, b) in straight_reports.iter().zip(&resumed_reports) {
            assert_eq!(a.kl.to_bits(), b.kl.to_bits());
            assert_eq!(a.value_loss.to_bits(), b.value_loss.to_bits());
            assert_eq!(a.accepted, b.accepted);
        }
        // The resume point matters: a learner that forgot its update count would shuffle
        // the critic's minibatches differently from update 1 on.
        let mut forgetful = learner(true);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for update in 0..3 {
            if update == 1 {
                let mut state = forgetful.state();
                state.updates_done = 0;
                forgetful =
                    Trpo::from_state(1, ActionDistribution::DiagGaussian { action_dim: 1 }, state)
                        .expect("valid state");
            }
            let (batch, _) = bandit_batch(&forgetful, &mut rng, 256);
            forgetful.update(&batch).expect("valid batch");
        }
        assert_ne!(state_bits(&straight), state_bits(&forgetful.state()));
    }

    #[test]
    fn from_state_refuses_bad_states_with_the_reason() {
        let trpo = learner(true);
        let head = ActionDistribution::DiagGaussian { action_dim: 1 };
        let err = |state: TrpoState, obs_dim: usize| {
            Trpo::from_state(obs_dim, head, state)
                .expect_err("invalid")
                .to_string()
        };
        let message = err(trpo.state(), 2);
        assert!(
            message.contains("saved learner is for 1 observations"),
            "{message}"
        );

        let mut state = trpo.state();
        state.policy_parameters.pop();
        let message = err(state, 1);
        assert!(message.contains("policy parameter vector has"), "{message}");

        let mut state = trpo.state();
        state.policy_parameters[2] = f64::NAN;
        let message = err(state, 1);
        assert!(
            message.contains("policy parameter 2 is not finite"),
            "{message}"
        );

        let mut state = trpo.state();
        state.value_optimizer.second_moment[0] = -1.0;
        let message = err(state, 1);
        assert!(
            message.contains("value Adam second moment[0] = -1"),
            "{message}"
        );

        let mut state = trpo.state();
        state.value_parameters.push(0.0);
        let message = err(state, 1);
        assert!(message.contains("saved value parameters has"), "{message}");

        let mut state = trpo.state();
        state.normalizer = None;
        let message = err(state, 1);
        assert!(message.contains("normaliser is missing"), "{message}");

        let mut state = trpo.state();
        state.config.target_kl = -1.0;
        let message = err(state, 1);
        assert!(message.contains("target_kl"), "{message}");

        let json = serde_json::to_string(&trpo.state()).expect("finite");
        let with_typo = json.replacen("updates_done", "updates_dne", 1);
        assert!(serde_json::from_str::<TrpoState>(&with_typo).is_err());
    }

    fn one_episode(observation: f32, reward: f32) -> Trajectory {
        let step: (&[f32], &[f32], f32) = (&[observation], &[0.1], reward);
        trajectory(LAYOUT, &[step; 4], EpisodeEnding::Terminated)
    }

    #[test]
    fn empty_batch_is_an_error_and_changes_nothing() {
        let mut trpo = learner(false);
        let before = trpo.policy().parameters().clone();
        let value_before = trpo.value_function().parameters().clone();
        let err = trpo.update(&RolloutBatch::new(LAYOUT)).expect_err("empty");
        assert_eq!(err, UpdateError::InvalidBatch(BatchError::Empty));
        assert_eq!(trpo.policy().parameters(), &before);
        assert_eq!(trpo.value_function().parameters(), &value_before);
    }

    #[test]
    fn a_batch_of_another_shape_is_an_error_and_changes_nothing() {
        let mut trpo = learner(true);
        let before = trpo.policy().parameters().clone();
        let wide = RecordLayout::new(2, RecordAction::Continuous { dim: 1 });
        let mut batch = RolloutBatch::new(wide);
        let step: (&[f32], &[f32], f32) = (&[0.3, 0.3], &[0.1], 1.0);
        batch
            .push(&trajectory(wide, &[step], EpisodeEnding::Terminated))
            .expect("same layout");
        let err = trpo.update(&batch).expect_err("two observations");
        assert!(
            err.to_string().contains("the learner takes 1 observations"),
            "{err}"
        );
        assert_eq!(trpo.policy().parameters(), &before);
        assert_eq!(trpo.normalizer().map(|n| n.count()), Some(0.0));
    }

    #[test]
    fn constant_advantages_skip_the_policy_step_and_say_why() {
        let mut trpo = learner(false);
        let before = trpo.policy().parameters().clone();
        // One-step episodes with identical observation and reward: every advantage is
        // r − V(s), the same number, so normalised advantages carry no signal.
        let batch = batch_of(&vec![step_episode(0.2, 0.0, 0.0); 8]);
        let report = trpo.update(&batch).expect("valid batch");
        assert!(!report.accepted);
        let reason = report.skipped_reason.expect("a reason");
        assert!(reason.contains("advantages are constant"), "{reason}");
        assert_eq!(trpo.policy().parameters(), &before);
    }

    #[test]
    fn truncated_episodes_bootstrap_from_the_final_observation() {
        let trpo = learner(false);
        let mut truncated = one_episode(0.3, 1.0);
        truncated.end_truncated(&[0.9]).expect("finite");
        let terminated = one_episode(0.3, 1.0);
        let obs = DMatrix::from_element(1, 4, 0.3);
        let a = trpo.estimate_advantages(&batch_of(&[truncated]), &obs);
        let b = trpo.estimate_advantages(&batch_of(&[terminated]), &obs);
        let v_final =
            trpo.value_function()
                .predict(&DMatrix::from_element(1, 1, f64::from(0.9f32)))[0];
        let gamma = trpo.config().gamma;
        approx::assert_relative_eq!(
            a.advantages[3] - b.advantages[3],
            gamma * v_final,
            max_relative = 1e-12
        );
    }
}
