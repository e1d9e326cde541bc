//! Warm starts (`tether train --init`): a new run whose learner starts from a trained
//! policy instead of random weights — the fine-tuning step of the sim-to-real workflow
//! (train on a randomised model, then briefly on the rig).
//!
//! Two sources:
//!
//! - **a run folder**: its checkpoint's policy, value function (with its Adam state) and
//!   observation normaliser with all its statistics, sample count included. The new run
//!   continues the statistics: its observations fold into them as if the old run had gone on.
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
    /// Reads a run folder's checkpoint (when `path` is a folder) or a `policy.bin`.
    pub fn load(path: &Path) -> Result<Self, WarmStartError> {
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
            return Ok(WarmStart::Run {
                path: path.to_path_buf(),
                state: Box::new(state),
            });
        }
        if !path.is_file() {
            return Err(WarmStartError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Ok(WarmStart::Policy {
            path: path.to_path_buf(),
            file: PolicyFile::read_bin(path)?,
        })
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
            WarmStart::Run { path, state } => {
                if state.plant != plant {
                    return Err(WarmStartError::PlantMismatch {
                        path: path.clone(),
                        theirs: state.plant.clone(),
                        ours: plant.to_string(),
                    });
                }
                from_run(path, &state.learner, fresh)
            }
            WarmStart::Policy { path, file } => from_policy(path, file, fresh),
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

fn from_policy(
    path: &Path,
    file: &PolicyFile,
    fresh: TrpoState,
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
        let count = POLICY_FILE_STATISTICS_COUNT;
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
        let warm = WarmStart::load(source.root()).expect("a run folder");
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
        let warm = WarmStart::load(&source.policy_path()).expect("a policy file");
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
        let warm = WarmStart::load(&source.policy_path()).expect("a policy file");

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
        let err = WarmStart::load(&dir.join("nothing")).expect_err("missing");
        assert!(matches!(err, WarmStartError::NotFound { .. }), "{err}");
        let err = WarmStart::load(dir.path()).expect_err("an empty folder");
        assert!(matches!(err, WarmStartError::NotFound { .. }), "{err}");
        std::fs::write(dir.join("junk.bin"), b"not a policy").expect("write");
        let err = WarmStart::load(&dir.join("junk.bin")).expect_err("junk");
        assert!(matches!(err, WarmStartError::Policy(_)), "{err}");
    }
}
