//! Warm starts (`tether train --init`): a new run whose learner starts from a trained
//! policy instead of random weights — the fine-tuning step of the sim-to-real workflow
//! (train on a randomised model, then briefly on the rig).
//!
//! Two sources:
//!
//! - **a run folder**: its checkpoint's policy, value function (with its Adam state) and
//!   observation normaliser with all its statistics, sample count included. The new run
//!   continues the statistics: its observations fold into them as if the old run had gone on.
//!   With `init_policy = "best"` (`--init-policy best`) the policy and the normaliser's mean
//!   and variance come from the folder's `best_policy.bin` instead — the policy the run
//!   deploys, which with `[evaluation] average_best` is a mean of several and was never the
//!   checkpoint's — and the value function and sample count still from the checkpoint: a
//!   value function trained on the same run's late policies is a far better start than a
//!   fresh one (fine-tuning from a `.bin` with a fresh one missed the 150 000-step
//!   goal on a qube seed that the run-folder start met; README, "Sim to real, measured").
//! - **a `policy.bin`**: the policy and the normaliser's mean and variance (recovered from the
//!   exported `scale = 1/sqrt(var + 1e-8)`), and a fresh value function. The file holds no
//!   sample count; the statistics continue as if they had come from
//!   [`POLICY_FILE_STATISTICS_COUNT`] observations, so a fine-tuning run moves them only as
//!   far as its own share of all observations (150 000 steps: 13 %). The policy was trained
//!   on exactly these statistics, and its inputs must not move under it: with a weight of
//!   one iteration's observations, measured on a qube policy fine-tuned on a plant with
//!   velocity noise and three times the arm damping, the first batch shifted the statistics
//!   so far that the *unchanged* policy's return fell from 1078 to 795 within two
//!   iterations, and the run never recovered (293 after six).
//!
//! Everything else comes from the new run's own configuration (a smaller `target_kl` is the
//! usual choice for fine-tuning) and seed; its update counter starts at 0. The networks'
//! shapes must match the new configuration's exactly: a mismatch is one error naming both.

use std::path::{Path, PathBuf};

use tether_shared::PolicySpec;

use super::run_state::TrainingState;
use crate::run::checkpoint::CheckpointError;
use crate::run::config::InitPolicy;
use crate::run::folder::RunFolder;
use crate::run::policy_file::{PolicyFile, PolicyFileError};
use crate::trpo::TrpoState;
use crate::trpo::learner_state::NormalizerState;
use crate::trpo::normalizer::VARIANCE_EPSILON;

/// The observation count a `policy.bin`'s normaliser statistics stand for when a run starts
/// from it (the file holds none; see the module documentation).
pub const POLICY_FILE_STATISTICS_COUNT: f64 = 1_000_000.0;

/// Why a warm start cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    /// The path is neither a run folder with a checkpoint nor a policy file.
    #[error(
        "--init {}: not a run folder with a checkpoint.bin nor a policy.bin file",
        path.display()
    )]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The run folder's checkpoint could not be read.
    #[error("--init {}: {source}", path.display())]
    Checkpoint {
        /// The run folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: CheckpointError,
    },
    /// The policy file could not be read.
    #[error("--init: {0}")]
    Policy(#[from] PolicyFileError),
    /// The saved networks do not have this run's shapes.
    #[error(
        "--init {}: its networks are {theirs}, this run's are {ours}; give this run the same \
         plant and `policy_hidden`, `value_hidden` and `normalize_observations` settings",
        path.display()
    )]
    ShapeMismatch {
        /// The source.
        path: PathBuf,
        /// The source's shapes.
        theirs: String,
        /// This run's shapes.
        ours: String,
    },
    /// `--init-policy best` on a run folder without a `best_policy.bin`.
    #[error(
        "--init {}: the run has no best_policy.bin (it ran no [evaluation]); start from its \
         last policy (--init-policy last) instead",
        path.display()
    )]
    NoBestPolicy {
        /// The run folder.
        path: PathBuf,
    },
    /// `--init-policy best` with a policy file, which is one policy already.
    #[error(
        "--init {}: --init-policy best picks a run folder's best_policy.bin; give the run \
         folder, or drop --init-policy to start from this file",
        path.display()
    )]
    BestOfAPolicyFile {
        /// The file given.
        path: PathBuf,
    },
    /// The run folder trained another plant.
    #[error("--init {}: it trained plant `{theirs}`, this run trains `{ours}`", path.display())]
    PlantMismatch {
        /// The run folder.
        path: PathBuf,
        /// Its plant.
        theirs: String,
        /// This run's plant.
        ours: String,
    },
}

/// A trained starting point, loaded before any device is touched.
#[derive(Clone, Debug)]
pub enum WarmStart {
    /// A run folder's checkpoint.
    Run {
        /// The folder.
        path: PathBuf,
        /// Its checkpoint.
        state: Box<TrainingState>,
        /// Its `best_policy.bin`, when the start takes that policy instead of the
        /// checkpoint's.
        best: Option<PolicyFile>,
    },
    /// An exported policy.
    Policy {
        /// The file.
        path: PathBuf,
        /// Its contents.
        file: PolicyFile,
    },
}

impl WarmStart {
    /// Reads a run folder's checkpoint (when `path` is a folder; with `which` =
    /// [`InitPolicy::Best`] its `best_policy.bin` too) or a `policy.bin`.
    pub fn load(path: &Path, which: InitPolicy) -> Result<Self, WarmStartError> {
        if path.is_dir() {
            let folder = RunFolder::open(path).map_err(|_| WarmStartError::NotFound {
                path: path.to_path_buf(),
            })?;
            let checkpoint = folder.checkpoint_path();
            if !checkpoint.is_file() {
                return Err(WarmStartError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            let state =
                TrainingState::load(&checkpoint).map_err(|source| WarmStartError::Checkpoint {
                    path: path.to_path_buf(),
                    source,
                })?;
            let best = match which {
                InitPolicy::Last => None,
                InitPolicy::Best => {
                    let best = folder.best_policy_path();
                    if !best.is_file() {
                        return Err(WarmStartError::NoBestPolicy {
                            path: path.to_path_buf(),
                        });
                    }
                    Some(PolicyFile::read_bin(&best)?)
                }
            };
            return Ok(WarmStart::Run {
                path: path.to_path_buf(),
                state: Box::new(state),
                best,
            });
        }
        if !path.is_file() {
            return Err(WarmStartError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if which == InitPolicy::Best {
            return Err(WarmStartError::BestOfAPolicyFile {
                path: path.to_path_buf(),
            });
        }
        Ok(WarmStart::Policy {
            path: path.to_path_buf(),
            file: PolicyFile::read_bin(path)?,
        })
    }

    /// What it starts from, in words (for the run's first line), e.g. `runs/x (its
    /// best_policy.bin, its value function)`.
    pub fn describe(&self) -> String {
        match self {
            WarmStart::Run { path, best, .. } => format!(
                "{} ({}, its value function)",
                path.display(),
                if best.is_some() {
                    "its best_policy.bin"
                } else {
                    "its last policy"
                }
            ),
            WarmStart::Policy { path, .. } => {
                format!("{} (a fresh value function)", path.display())
            }
        }
    }

    /// Where it came from.
    pub fn path(&self) -> &Path {
        match self {
            WarmStart::Run { path, .. } | WarmStart::Policy { path, .. } => path,
        }
    }

    /// The learner a new run on `plant` starts with: `fresh` (a new learner of the run's
    /// configuration and seed) with the warm start's parts in place.
    pub fn apply(&self, plant: &str, fresh: TrpoState) -> Result<TrpoState, WarmStartError> {
        match self {
            WarmStart::Run { path, state, best } => {
                if state.plant != plant {
                    return Err(WarmStartError::PlantMismatch {
                        path: path.clone(),
                        theirs: state.plant.clone(),
                        ours: plant.to_string(),
                    });
                }
                let started = from_run(path, &state.learner, fresh)?;
                match best {
                    None => Ok(started),
                    // The checkpoint's sample count: the best policy's statistics stand for
                    // as many observations as the run's own.
                    Some(file) => {
                        let count = started.normalizer.as_ref().map_or(0.0, |n| n.count);
                        from_policy(path, file, started, count)
                    }
                }
            }
            WarmStart::Policy { path, file } => {
                from_policy(path, file, fresh, POLICY_FILE_STATISTICS_COUNT)
            }
        }
    }
}

/// The shapes of a learner, in words: what a mismatch error shows.
fn shapes(state: &TrpoState, with_value: bool) -> String {
    let mut text = format!(
        "policy {:?} over {} observations with {:?}, normaliser {}",
        state.config.policy_hidden,
        state.obs_dim,
        state.head,
        if state.normalizer.is_some() {
            "on"
        } else {
            "off"
        }
    );
    if with_value {
        text.push_str(&format!(", value {:?}", state.config.value_hidden));
    }
    text
}

fn from_run(path: &Path, saved: &TrpoState, fresh: TrpoState) -> Result<TrpoState, WarmStartError> {
    let same = saved.obs_dim == fresh.obs_dim
        && saved.head == fresh.head
        && saved.config.policy_hidden == fresh.config.policy_hidden
        && saved.config.value_hidden == fresh.config.value_hidden
        && saved.normalizer.is_some() == fresh.normalizer.is_some()
        && saved.policy_parameters.len() == fresh.policy_parameters.len()
        && saved.value_parameters.len() == fresh.value_parameters.len();
    if !same {
        return Err(WarmStartError::ShapeMismatch {
            path: path.to_path_buf(),
            theirs: shapes(saved, true),
            ours: shapes(&fresh, true),
        });
    }
    Ok(TrpoState {
        policy_parameters: saved.policy_parameters.clone(),
        value_parameters: saved.value_parameters.clone(),
        value_optimizer: saved.value_optimizer.clone(),
        normalizer: saved.normalizer.clone(),
        ..fresh
    })
}

/// `fresh` with its policy and normaliser replaced by `file`'s; the normaliser's statistics
/// stand for `count` observations.
fn from_policy(
    path: &Path,
    file: &PolicyFile,
    fresh: TrpoState,
    count: f64,
) -> Result<TrpoState, WarmStartError> {
    let spec: &PolicySpec = &file.spec;
    let normaliser_len = spec.normalizer_len();
    let network = file.params.get(normaliser_len..).unwrap_or(&[]);
    let same = usize::from(spec.obs_dim) == fresh.obs_dim
        && spec.hidden.iter().map(|&w| usize::from(w)).eq(fresh
            .config
            .policy_hidden
            .iter()
            .copied())
        && spec.normalize_obs == fresh.normalizer.is_some()
        && network.len() == fresh.policy_parameters.len()
        && head_matches(spec, &fresh);
    if !same {
        let theirs = format!(
            "policy {:?} over {} observations with {:?}, normaliser {}",
            spec.hidden.as_slice(),
            spec.obs_dim,
            spec.head,
            if spec.normalize_obs { "on" } else { "off" }
        );
        return Err(WarmStartError::ShapeMismatch {
            path: path.to_path_buf(),
            theirs,
            ours: shapes(&fresh, false),
        });
    }
    let obs_dim = fresh.obs_dim;
    let normalizer = spec.normalize_obs.then(|| {
        let (mean, scale) = file.params.split_at(obs_dim.min(file.params.len()));
        let variance = scale
            .iter()
            .take(obs_dim)
            .map(|&s| (1.0 / (f64::from(s) * f64::from(s)) - VARIANCE_EPSILON).max(0.0));
        NormalizerState {
            count,
            mean: mean.iter().map(|&m| f64::from(m)).collect(),
            m2: variance.map(|v| v * count).collect(),
        }
    });
    Ok(TrpoState {
        policy_parameters: network.iter().map(|&p| f64::from(p)).collect(),
        normalizer,
        ..fresh
    })
}

/// Whether the file's head is the learner's (same kind and width).
fn head_matches(spec: &PolicySpec, fresh: &TrpoState) -> bool {
    use crate::trpo::distribution::ActionDistribution as Learner;
    use tether_shared::PolicyHead as Wire;
    match (spec.head, fresh.head) {
        (Wire::Gaussian { action_dim }, Learner::DiagGaussian { action_dim: ours }) => {
            usize::from(action_dim) == ours
        }
        (Wire::Categorical { n }, Learner::Categorical { n_actions }) => {
            usize::from(n) == n_actions
        }
        // The noise period is a setting of the run, not of the network: a fine-tuning run
        // may draw its noise on another schedule.
        (Wire::GaussianSde(file), Learner::StateDependent(ours)) => {
            usize::from(file.action_dim) == ours.action_dim
                && file.full_std == ours.full_std
                && file.use_expln == ours.use_expln
                && spec.hidden.last().map(|&w| usize::from(w)) == Some(ours.features)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::run::config::RunConfig;
    use crate::run::testdir::TestDir;
    use crate::training::Session;
    use crate::trpo::Trpo;
    use crate::trpo::distribution::ActionDistribution;
    use crate::trpo::hyperparams::TrpoConfig;

    /// A pendulum run of 400 steps ([4] networks, normaliser on), seed `seed`.
    fn config(seed: u64) -> RunConfig<TrpoConfig> {
        let mut config = RunConfig::<TrpoConfig> {
            plant: "pendulum".into(),
            seed,
            total_steps: 400,
            steps_per_iteration: 200,
            ..RunConfig::default()
        };
        config.devices.sim = 2;
        config.trpo.policy_hidden = vec![4];
        config.trpo.value_hidden = vec![4];
        config.trpo.normalize_observations = true;
        config
    }

    fn trained(dir: &TestDir) -> RunFolder {
        let folder = RunFolder::create(&dir.join("source")).expect("folder");
        let paths = folder.clone();
        Session::start(folder, config(4))
            .expect("starts")
            .run(&AtomicBool::new(false), |_| {})
            .expect("finishes");
        paths
    }

    fn fresh(config: &RunConfig<TrpoConfig>) -> TrpoState {
        Trpo::new(
            3,
            ActionDistribution::DiagGaussian { action_dim: 1 },
            config.trpo.clone(),
            config.seed,
        )
        .expect("a learner")
        .state()
    }

    #[test]
    fn a_run_folder_gives_its_policy_value_function_and_normaliser_statistics() {
        let dir = TestDir::new("warm-run");
        let source = trained(&dir);
        let saved = TrainingState::load(&source.checkpoint_path()).expect("checkpoint");
        let mut new_config = config(9);
        new_config.trpo.target_kl = 0.002;
        let warm = WarmStart::load(source.root(), InitPolicy::Last).expect("a run folder");
        let state = warm.apply("pendulum", fresh(&new_config)).expect("fits");
        assert_eq!(state.policy_parameters, saved.learner.policy_parameters);
        assert_eq!(state.value_parameters, saved.learner.value_parameters);
        assert_eq!(state.value_optimizer, saved.learner.value_optimizer);
        assert_eq!(state.normalizer, saved.learner.normalizer);
        assert!(state.normalizer.as_ref().is_some_and(|n| n.count >= 400.0));
        assert_eq!((state.seed, state.updates_done), (9, 0));
        assert_eq!(state.config.target_kl, 0.002, "the new run's settings");

        let err = warm
            .apply("cartpole", fresh(&new_config))
            .expect_err("another plant");
        assert!(matches!(err, WarmStartError::PlantMismatch { .. }), "{err}");
        let mut wider = new_config.clone();
        wider.trpo.value_hidden = vec![8];
        let err = warm
            .apply("pendulum", fresh(&wider))
            .expect_err("another value network");
        let message = err.to_string();
        assert!(
            message.contains("value [4]") && message.contains("value [8]"),
            "{message}"
        );
    }

    #[test]
    fn a_policy_file_gives_the_policy_and_normaliser_and_exports_unchanged() {
        let dir = TestDir::new("warm-policy");
        let source = trained(&dir);
        let file = PolicyFile::read_bin(&source.policy_path()).expect("policy.bin");
        let warm = WarmStart::load(&source.policy_path(), InitPolicy::Last).expect("a policy file");
        let new_config = config(11);
        let state = warm.apply("pendulum", fresh(&new_config)).expect("fits");
        let fresh_value = fresh(&new_config).value_parameters;
        assert_eq!(
            state.value_parameters, fresh_value,
            "a fresh value function"
        );
        let normalizer = state.normalizer.clone().expect("normaliser");
        assert_eq!(normalizer.count, POLICY_FILE_STATISTICS_COUNT);
        let learner =
            Trpo::from_state(3, ActionDistribution::DiagGaussian { action_dim: 1 }, state)
                .expect("a learner");
        let exported: Vec<u32> = learner.export_f32().iter().map(|v| v.to_bits()).collect();
        let original: Vec<u32> = file.params.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            exported, original,
            "the device runs exactly the file's policy"
        );

        let mut no_normaliser = new_config.clone();
        no_normaliser.trpo.normalize_observations = false;
        let err = warm
            .apply("pendulum", fresh(&no_normaliser))
            .expect_err("normaliser off");
        assert!(err.to_string().contains("normaliser on"), "{err}");
    }

    /// `--init-policy best`: the folder's `best_policy.bin` (here a mean of two evaluated
    /// policies, so neither the checkpoint's nor any single one) is what the new run
    /// deploys first, with the checkpoint's value function and sample count; a folder
    /// without one and a policy file are refused, naming the way out.
    #[test]
    fn the_best_policy_of_a_run_folder_starts_with_the_runs_value_function() {
        let dir = TestDir::new("warm-best");
        let mut evaluated = config(4);
        evaluated.total_steps = 1200;
        evaluated.evaluation.every = 1;
        evaluated.evaluation.episodes = 2;
        evaluated.evaluation.average_best = 2;
        let folder = RunFolder::create(&dir.join("source")).expect("folder");
        let source = folder.clone();
        Session::start(folder, evaluated)
            .expect("starts")
            .run(&AtomicBool::new(false), |_| {})
            .expect("finishes");
        let best = PolicyFile::read_bin(&source.best_policy_path()).expect("best_policy.bin");
        let last = PolicyFile::read_bin(&source.policy_path()).expect("policy.bin");
        assert_ne!(best.params, last.params);
        let saved = TrainingState::load(&source.checkpoint_path()).expect("checkpoint");

        let warm = WarmStart::load(source.root(), InitPolicy::Best).expect("a run folder");
        let state = warm.apply("pendulum", fresh(&config(9))).expect("fits");
        assert_eq!(state.value_parameters, saved.learner.value_parameters);
        assert_eq!(state.value_optimizer, saved.learner.value_optimizer);
        let count = saved.learner.normalizer.as_ref().expect("normaliser").count;
        assert_eq!(state.normalizer.as_ref().map(|n| n.count), Some(count));
        let learner =
            Trpo::from_state(3, ActionDistribution::DiagGaussian { action_dim: 1 }, state)
                .expect("a learner");
        let exported = learner.export_f32();
        assert_eq!(exported.len(), best.params.len());
        for (i, (e, b)) in exported.iter().zip(&best.params).enumerate() {
            // The normaliser's scale goes through a variance and back.
            assert!(
                (e - b).abs() <= 1e-6 * b.abs().max(1.0),
                "parameter {i}: {e} vs {b}"
            );
        }

        let err = WarmStart::load(&source.best_policy_path(), InitPolicy::Best)
            .expect_err("a policy file");
        assert!(
            matches!(err, WarmStartError::BestOfAPolicyFile { .. }),
            "{err}"
        );
        let plain_dir = TestDir::new("warm-best-plain");
        let plain = trained(&plain_dir);
        let err = WarmStart::load(plain.root(), InitPolicy::Best).expect_err("no evaluations");
        assert!(err.to_string().contains("--init-policy last"), "{err}");
    }

    /// A gSDE run's `policy.bin` (the best evaluated policy a shipped randomised run keeps)
    /// starts a gSDE run, whatever its noise period, and exports unchanged; a run with
    /// plain Gaussian noise refuses it, naming both heads.
    #[test]
    fn a_gsde_policy_file_starts_a_gsde_run_and_only_that() {
        let dir = TestDir::new("warm-gsde");
        let gsde = |seed: u64, sample_freq: i64| {
            let mut c = config(seed);
            c.trpo.use_sde = true;
            c.trpo.sde_sample_freq = sample_freq;
            c
        };
        let folder = RunFolder::create(&dir.join("source")).expect("folder");
        let source = folder.clone();
        Session::start(folder, gsde(4, 8))
            .expect("starts")
            .run(&AtomicBool::new(false), |_| {})
            .expect("finishes");
        let file = PolicyFile::read_bin(&source.policy_path()).expect("policy.bin");
        let warm = WarmStart::load(&source.policy_path(), InitPolicy::Last).expect("a policy file");

        let new_config = gsde(11, 4);
        let head = crate::training::run_state::TrainingState::load(&source.checkpoint_path())
            .expect("checkpoint")
            .learner
            .head;
        assert!(
            matches!(head, ActionDistribution::StateDependent(_)),
            "{head:?}"
        );
        let fresh_gsde = Trpo::new(3, head, new_config.trpo.clone(), 11)
            .expect("a learner")
            .state();
        let state = warm.apply("pendulum", fresh_gsde).expect("fits");
        let learner = Trpo::from_state(3, head, state).expect("a learner");
        let exported: Vec<u32> = learner.export_f32().iter().map(|v| v.to_bits()).collect();
        let original: Vec<u32> = file.params.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            exported, original,
            "the device runs exactly the file's policy"
        );

        let err = warm
            .apply("pendulum", fresh(&config(11)))
            .expect_err("plain Gaussian noise");
        assert!(err.to_string().contains("GaussianSde"), "{err}");
    }

    #[test]
    fn anything_else_is_named() {
        let dir = TestDir::new("warm-missing");
        let err = WarmStart::load(&dir.join("nothing"), InitPolicy::Last).expect_err("missing");
        assert!(matches!(err, WarmStartError::NotFound { .. }), "{err}");
        let err = WarmStart::load(dir.path(), InitPolicy::Last).expect_err("an empty folder");
        assert!(matches!(err, WarmStartError::NotFound { .. }), "{err}");
        std::fs::write(dir.join("junk.bin"), b"not a policy").expect("write");
        let err = WarmStart::load(&dir.join("junk.bin"), InitPolicy::Last).expect_err("junk");
        assert!(matches!(err, WarmStartError::Policy(_)), "{err}");
    }
}
