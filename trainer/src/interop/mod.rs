//! Policies for the tools people already use: ONNX models ([`onnx`]) for inference runtimes
//! and self-contained C headers ([`c_header`]) for firmware not written in Rust.
//!
//! Both write the *deterministic* policy a trained controller runs: the observation
//! normaliser, the network with the shared rational `tanh`, then the mean action clamped to
//! the plant's bounds (Gaussian head) or the index of the largest logit (categorical head).
//! [`DeployedPolicy::act`] is that policy computed with the shared f32 forward pass: the
//! reference both writers are tested against.

pub mod c_header;
pub mod onnx;

#[cfg(test)]
pub(crate) mod test_policies;

use tether_shared::policy::{PolicyView, argmax};
use tether_shared::{ActionSpace, PlantDescription, PolicyHead, PolicySpec};

use crate::run::PolicyFile;
use crate::run::folder::RunFolder;
use crate::run::metrics::{MetricsError, read_metrics};
use crate::run::plant_file::{PlantFileError, load_plant};

/// Why a policy cannot be exported for another tool.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The parameters do not fit the spec, or are not finite.
    #[error("the policy is unusable: {0}")]
    InvalidPolicy(String),
    /// The plant description does not fit the policy.
    #[error(
        "the policy (observation of {obs_dim}, {head:?}) does not fit plant `{plant}`; \
         the run's plant.json and policy.bin disagree"
    )]
    PlantMismatch {
        /// The policy's observation size.
        obs_dim: u8,
        /// The policy's head.
        head: PolicyHead,
        /// The plant's name.
        plant: String,
    },
    /// The run's plant description is missing or unreadable.
    #[error(transparent)]
    Plant(#[from] PlantFileError),
    /// The run's metrics (which count the policy's updates) are unreadable.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A trained policy with what an export needs besides its parameters: the plant it drives
/// (name and action bounds) and its version.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployedPolicy {
    spec: PolicySpec,
    params: Vec<f32>,
    plant: PlantDescription,
    version: u32,
}

/// The parameters of one layer, in the shared layout.
#[derive(Clone, Copy, Debug)]
pub struct LayerParams<'a> {
    /// Inputs of the layer.
    pub inputs: usize,
    /// Outputs of the layer.
    pub outputs: usize,
    /// Weights, row-major `[outputs][inputs]`.
    pub weights: &'a [f32],
    /// Biases, `[outputs]`.
    pub bias: &'a [f32],
    /// Whether `tanh` follows (every layer but the last).
    pub hidden: bool,
}

/// What the deterministic policy does for one observation.
#[derive(Clone, Debug, PartialEq)]
pub enum DeterministicAction {
    /// The Gaussian mean, clamped to the plant's bounds.
    Continuous(Vec<f32>),
    /// The index of the largest logit (the first one on a tie).
    Discrete(usize),
}

impl DeployedPolicy {
    /// Checks the policy ([`PolicyFile::check`]) and that it fits `plant`. `version` is the
    /// protocol's policy version: 1 for the initial policy, `n + 1` after `n` updates.
    pub fn new(
        policy: PolicyFile,
        plant: PlantDescription,
        version: u32,
    ) -> Result<Self, DeployError> {
        policy.check().map_err(DeployError::InvalidPolicy)?;
        policy
            .spec
            .check_plant(&plant)
            .map_err(|_| DeployError::PlantMismatch {
                obs_dim: policy.spec.obs_dim,
                head: policy.spec.head,
                plant: plant.name.to_string(),
            })?;
        Ok(DeployedPolicy {
            spec: policy.spec,
            params: policy.params,
            plant,
            version,
        })
    }

    /// `policy` (the run's `policy.bin`) with the run's plant description (`plant.json`)
    /// and its version counted from `metrics.jsonl`: `n + 1` after the `n` iterations
    /// recorded there, each of which updated the policy and rewrote `policy.bin`. (A crash
    /// between an iteration's metrics line and its `policy.bin` leaves the count one ahead
    /// of the file until `tether resume` trims the metrics back to the checkpoint.)
    pub fn for_run(folder: &RunFolder, policy: PolicyFile) -> Result<Self, DeployError> {
        let plant = load_plant(&folder.plant_path())?;
        let metrics_path = folder.metrics_path();
        let iterations = if metrics_path.exists() {
            read_metrics(&metrics_path)?
                .last()
                .map_or(0, |m| m.iteration.saturating_add(1))
        } else {
            0
        };
        let version = u32::try_from(iterations.saturating_add(1)).unwrap_or(u32::MAX);
        Self::new(policy, plant, version)
    }

    /// The network's shape.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The plant the policy drives.
    pub fn plant(&self) -> &PlantDescription {
        &self.plant
    }

    /// The policy version (1 for the initial policy).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The normaliser's mean and scale, when the spec has one.
    pub fn normalizer(&self) -> Option<(&[f32], &[f32])> {
        let n = self.spec.obs_dim as usize;
        self.spec
            .normalize_obs
            .then(|| self.params.get(..2 * n).map(|p| p.split_at(n)))
            .flatten()
    }

    /// Every layer's parameters, input side first.
    pub fn layers(&self) -> Vec<LayerParams<'_>> {
        let mut rest = self.params.get(self.spec.normalizer_len()..).unwrap_or(&[]);
        let count = self.spec.hidden.len() + 1;
        let mut layers = Vec::with_capacity(count);
        for (index, (inputs, outputs)) in self.spec.layers().enumerate() {
            // The constructor checked the length, so every split fits.
            let Some((weights, tail)) = rest.split_at_checked(inputs * outputs) else {
                break;
            };
            let Some((bias, tail)) = tail.split_at_checked(outputs) else {
                break;
            };
            rest = tail;
            layers.push(LayerParams {
                inputs,
                outputs,
                weights,
                bias,
                hidden: index + 1 < count,
            });
        }
        layers
    }

    /// The plant's action bounds `(low, high)` for a continuous action.
    pub fn action_bounds(&self) -> Option<(&[f32], &[f32])> {
        match &self.plant.action {
            ActionSpace::Continuous { low, high } => Some((low, high)),
            ActionSpace::Discrete { .. } => None,
        }
    }

    /// The deterministic action for `obs` by the shared f32 forward pass; `None` when `obs`
    /// is not `obs_dim` long.
    pub fn act(&self, obs: &[f32]) -> Option<DeterministicAction> {
        let view = PolicyView::new(&self.spec, &self.params).ok()?;
        let mut scratch = vec![0.0; self.spec.scratch_len()];
        let mut out = vec![0.0; self.spec.output_dim()];
        view.forward(obs, &mut scratch, &mut out).ok()?;
        Some(match self.action_bounds() {
            Some((low, high)) => DeterministicAction::Continuous(
                out.iter()
                    .zip(low.iter().zip(high))
                    .map(|(&m, (&lo, &hi))| m.clamp(lo, hi))
                    .collect(),
            ),
            // The device's argmax (first maximum on a tie); logits that are not all finite
            // have no defined choice, reported as index 0.
            None => DeterministicAction::Discrete(argmax(&out).unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_policies::{Head, random_policy};
    use super::*;

    #[test]
    fn layers_cover_the_parameters_in_order() {
        let policy = random_policy(Head::Continuous, &[5, 4], true, 1);
        let layers = policy.layers();
        assert_eq!(layers.len(), 3);
        assert_eq!((layers[0].inputs, layers[0].outputs), (3, 5));
        assert!(layers[0].hidden && layers[1].hidden && !layers[2].hidden);
        let covered: usize = layers.iter().map(|l| l.weights.len() + l.bias.len()).sum();
        assert_eq!(covered, policy.spec().network_len());
        let (mean, scale) = policy.normalizer().unwrap();
        assert_eq!((mean.len(), scale.len()), (3, 3));
        // The first weight follows the normaliser.
        assert_eq!(layers[0].weights[0].to_bits(), policy.params[6].to_bits());
    }

    #[test]
    fn a_policy_for_another_plant_is_refused() {
        let policy = random_policy(Head::Continuous, &[4], false, 2);
        let mut plant = policy.plant().clone();
        plant.obs_dim = 5;
        let file = PolicyFile {
            spec: policy.spec().clone(),
            params: policy.params.clone(),
        };
        let err = DeployedPolicy::new(file.clone(), plant, 1).unwrap_err();
        assert!(matches!(err, DeployError::PlantMismatch { .. }), "{err}");
        let mut bad = file;
        bad.params[0] = f32::NAN;
        let err = DeployedPolicy::new(bad, policy.plant().clone(), 1).unwrap_err();
        assert!(err.to_string().contains("parameter 0"), "{err}");
    }
}
