//! Policy shape and flat parameter layout.
//!
//! # Parameter order
//!
//! A policy's parameters travel and are stored as one flat `[f32]`, in this order:
//!
//! 1. if [`PolicySpec::normalize_obs`]: `obs_mean[obs_dim]`, then `obs_scale[obs_dim]`
//!    (`1 / sqrt(var + 1e-8)`); the network sees `clamp((obs - mean) * scale, ±10)`;
//! 2. for each layer, hidden layers first and the output layer last: its weights row-major
//!    `[out][in]` (one row per output unit), then its bias `[out]`;
//! 3. for a Gaussian head: `log_std[action_dim]` (natural log of the standard deviation,
//!    independent of the state); for a gSDE head ([`PolicyHead::GaussianSde`]):
//!    `log_std[features][columns]` row-major, `features` = [`PolicySpec::features_dim`],
//!    `columns` = [`SdeHead::log_std_columns`] (see [`super::sde`]).
//!
//! Hidden layers use `tanh`; the output layer is linear and yields the Gaussian mean or the
//! categorical logits.

use heapless::Vec;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

use super::sde::SdeHead;
use crate::plant::{
    ActionSpace, MAX_ACTION_DIM, MAX_DISCRETE_ACTIONS, MAX_OBS_DIM, PlantDescription,
};

/// Most hidden layers a policy may have.
pub const MAX_HIDDEN_LAYERS: usize = 4;
/// Widest layer a policy may have (units).
pub const MAX_LAYER_WIDTH: usize = 256;
/// Normalised observations are clamped to `±NORMALIZED_OBS_CLIP` before the network.
pub const NORMALIZED_OBS_CLIP: f32 = 10.0;

/// The distribution a policy's output parameterises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PolicyHead {
    /// Diagonal Gaussian over a continuous action: the network outputs the mean, a
    /// state-independent `log_std` vector follows the layers.
    Gaussian {
        /// Action dimension.
        action_dim: u8,
    },
    /// Categorical over `n` discrete actions: the network outputs the logits.
    Categorical {
        /// Number of choices.
        n: u8,
    },
    /// Gaussian with state-dependent exploration (gSDE, protocol version 2): the network
    /// outputs the mean, a `features × columns` log-std matrix follows the layers, and the
    /// device draws the noise from the last hidden features (see [`super::sde`]).
    GaussianSde(SdeHead),
}

impl PolicyHead {
    /// Number of network outputs: mean dimension or number of logits.
    pub fn output_dim(&self) -> usize {
        match *self {
            PolicyHead::Gaussian { action_dim } => action_dim as usize,
            PolicyHead::Categorical { n } => n as usize,
            PolicyHead::GaussianSde(head) => head.action_dim as usize,
        }
    }

    /// Whether the head acts on a continuous action space (Gaussian, plain or gSDE).
    pub fn is_continuous(&self) -> bool {
        !matches!(self, PolicyHead::Categorical { .. })
    }
}

/// Why a [`PolicySpec`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SpecError {
    /// Observation dimension is 0 or above [`MAX_OBS_DIM`].
    ObsDim,
    /// A hidden layer has 0 units or more than [`MAX_LAYER_WIDTH`].
    LayerWidth,
    /// The head's output dimension is outside the protocol's limits.
    HeadSize,
    /// The policy has more parameters than the device can store.
    OverCapacity {
        /// Parameters the spec needs.
        needed: u32,
        /// Parameters the device can hold.
        capacity: u32,
    },
    /// The spec does not fit the plant (observation size or action kind and size differ).
    PlantMismatch,
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpecError::ObsDim => write!(f, "observation dimension must be 1..={MAX_OBS_DIM}"),
            SpecError::LayerWidth => {
                write!(f, "hidden layer widths must be 1..={MAX_LAYER_WIDTH}")
            }
            SpecError::HeadSize => write!(
                f,
                "Gaussian action dimension must be 1..={MAX_ACTION_DIM}, categorical choices 2..={MAX_DISCRETE_ACTIONS}"
            ),
            SpecError::OverCapacity { needed, capacity } => write!(
                f,
                "policy needs {needed} parameters but the device holds at most {capacity}"
            ),
            SpecError::PlantMismatch => {
                write!(
                    f,
                    "policy shape does not match the plant's observation and action"
                )
            }
        }
    }
}

/// Shape of a policy network: everything needed to interpret its flat parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PolicySpec {
    /// Values in one observation (network input size).
    pub obs_dim: u8,
    /// Width of each hidden layer, input side first.
    pub hidden: Vec<u16, MAX_HIDDEN_LAYERS>,
    /// Output distribution.
    pub head: PolicyHead,
    /// Whether an observation normaliser (mean and scale) precedes the network.
    pub normalize_obs: bool,
}

impl PolicySpec {
    /// The spec for a plant with the given hidden widths (silently keeps at most
    /// [`MAX_HIDDEN_LAYERS`]; call [`PolicySpec::validate`] before use).
    pub fn for_plant(plant: &PlantDescription, hidden: &[u16], normalize_obs: bool) -> Self {
        let head = match &plant.action {
            ActionSpace::Continuous { low, .. } => PolicyHead::Gaussian {
                action_dim: low.len() as u8,
            },
            ActionSpace::Discrete { n } => PolicyHead::Categorical { n: *n },
        };
        let mut widths = Vec::new();
        for &w in hidden.iter().take(MAX_HIDDEN_LAYERS) {
            // Cannot fail: we take at most the vector's capacity.
            let _ = widths.push(w);
        }
        PolicySpec {
            obs_dim: plant.obs_dim,
            hidden: widths,
            head,
            normalize_obs,
        }
    }

    /// Checks sizes against the protocol's limits and the parameter count against a device
    /// capacity (in f32 values).
    pub fn validate(&self, capacity: u32) -> Result<(), SpecError> {
        if self.obs_dim == 0 || self.obs_dim as usize > MAX_OBS_DIM {
            return Err(SpecError::ObsDim);
        }
        if self
            .hidden
            .iter()
            .any(|&w| w == 0 || w as usize > MAX_LAYER_WIDTH)
        {
            return Err(SpecError::LayerWidth);
        }
        let head_ok = match self.head {
            PolicyHead::Gaussian { action_dim }
            | PolicyHead::GaussianSde(SdeHead { action_dim, .. }) => {
                (1..=MAX_ACTION_DIM).contains(&(action_dim as usize))
            }
            PolicyHead::Categorical { n } => (2..=MAX_DISCRETE_ACTIONS).contains(&(n as usize)),
        };
        if !head_ok {
            return Err(SpecError::HeadSize);
        }
        let needed = self.param_count();
        if needed > capacity as usize {
            return Err(SpecError::OverCapacity {
                needed: needed.min(u32::MAX as usize) as u32,
                capacity,
            });
        }
        Ok(())
    }

    /// Checks the spec drives the given plant: same observation size, same action kind and
    /// size.
    pub fn check_plant(&self, plant: &PlantDescription) -> Result<(), SpecError> {
        let fits = self.obs_dim == plant.obs_dim
            && match (&self.head, &plant.action) {
                (
                    PolicyHead::Gaussian { action_dim }
                    | PolicyHead::GaussianSde(SdeHead { action_dim, .. }),
                    ActionSpace::Continuous { low, .. },
                ) => *action_dim as usize == low.len(),
                (PolicyHead::Categorical { n }, ActionSpace::Discrete { n: m }) => n == m,
                _ => false,
            };
        if fits {
            Ok(())
        } else {
            Err(SpecError::PlantMismatch)
        }
    }

    /// Number of network outputs.
    pub fn output_dim(&self) -> usize {
        self.head.output_dim()
    }

    /// `(inputs, outputs)` of each layer, hidden layers first, output layer last.
    pub fn layers(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let outs = self
            .hidden
            .iter()
            .map(|&w| w as usize)
            .chain(core::iter::once(self.output_dim()));
        let ins =
            core::iter::once(self.obs_dim as usize).chain(self.hidden.iter().map(|&w| w as usize));
        ins.zip(outs)
    }

    /// Values taken by the observation normaliser (0 when disabled).
    pub fn normalizer_len(&self) -> usize {
        if self.normalize_obs {
            2 * self.obs_dim as usize
        } else {
            0
        }
    }

    /// Values taken by the network's weights and biases.
    pub fn network_len(&self) -> usize {
        self.layers().map(|(i, o)| i * o + o).sum()
    }

    /// Width of the features the output layer reads: the last hidden layer's, or the
    /// observation's when there is no hidden layer. A gSDE head draws its noise from them.
    pub fn features_dim(&self) -> usize {
        self.hidden
            .last()
            .map_or(self.obs_dim as usize, |&w| w as usize)
    }

    /// Values taken by the log-std that follows the layers: `action_dim` for a Gaussian
    /// head, `features × columns` for a gSDE head, 0 for a categorical head.
    pub fn log_std_len(&self) -> usize {
        match self.head {
            PolicyHead::Gaussian { action_dim } => action_dim as usize,
            PolicyHead::Categorical { .. } => 0,
            PolicyHead::GaussianSde(head) => self.features_dim() * head.log_std_columns(),
        }
    }

    /// Values of a gSDE head's noise matrix (`features × action_dim`), the state a device
    /// keeps beside the parameters while exploring; 0 for the other heads.
    pub fn noise_len(&self) -> usize {
        match self.head {
            PolicyHead::GaussianSde(head) => self.features_dim() * head.action_dim as usize,
            _ => 0,
        }
    }

    /// Total number of f32 parameters, in the order documented at the top of this module.
    pub fn param_count(&self) -> usize {
        self.normalizer_len() + self.network_len() + self.log_std_len()
    }

    /// Multiply-accumulates in one forward pass (weights only).
    pub fn macs(&self) -> usize {
        self.layers().map(|(i, o)| i * o).sum()
    }

    /// Widest layer output, which sizes the forward pass's scratch.
    pub fn max_width(&self) -> usize {
        self.layers()
            .map(|(i, o)| i.max(o))
            .max()
            .unwrap_or(self.obs_dim as usize)
    }

    /// Length of the scratch buffer [`crate::policy::PolicyView::forward`] needs: two
    /// activation vectors of the widest layer.
    pub fn scratch_len(&self) -> usize {
        2 * self.max_width()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hidden: &[u16], head: PolicyHead, normalize_obs: bool) -> PolicySpec {
        PolicySpec {
            obs_dim: 3,
            hidden: Vec::from_slice(hidden).unwrap(),
            head,
            normalize_obs,
        }
    }

    #[test]
    fn parameter_count_follows_documented_layout() {
        // 3 -> 64 -> 64 -> 1, plus log_std.
        let s = spec(&[64, 64], PolicyHead::Gaussian { action_dim: 1 }, false);
        assert_eq!(s.network_len(), 3 * 64 + 64 + 64 * 64 + 64 + 64 + 1);
        assert_eq!(s.param_count(), s.network_len() + 1);
        let n = spec(&[64, 64], PolicyHead::Gaussian { action_dim: 1 }, true);
        assert_eq!(n.param_count(), s.param_count() + 6);
        let c = spec(&[], PolicyHead::Categorical { n: 2 }, false);
        assert_eq!(c.param_count(), 3 * 2 + 2);
        assert_eq!(s.macs(), 3 * 64 + 64 * 64 + 64);
        assert_eq!((s.features_dim(), c.features_dim()), (64, 3));
        assert_eq!((s.noise_len(), c.noise_len()), (0, 0));
    }

    #[test]
    fn a_gsde_head_carries_a_log_std_matrix_over_the_features() {
        let head = SdeHead {
            action_dim: 2,
            full_std: true,
            use_expln: false,
            resample_every: 4,
        };
        let full = spec(&[64, 32], PolicyHead::GaussianSde(head), true);
        let network = 3 * 64 + 64 + 64 * 32 + 32 + 32 * 2 + 2;
        assert_eq!(full.log_std_len(), 32 * 2);
        assert_eq!(full.param_count(), 6 + network + 64);
        assert_eq!(full.noise_len(), 64);
        assert_eq!(full.output_dim(), 2);
        let shared = spec(
            &[64, 32],
            PolicyHead::GaussianSde(SdeHead {
                full_std: false,
                ..head
            }),
            false,
        );
        assert_eq!(shared.log_std_len(), 32);
        assert_eq!(shared.noise_len(), 64);
        // No hidden layer: the (normalised) observation is the feature vector.
        let flat = spec(&[], PolicyHead::GaussianSde(head), false);
        assert_eq!((flat.features_dim(), flat.log_std_len()), (3, 6));
        assert_eq!(full.validate(10_000), Ok(()));
        assert!(PolicyHead::GaussianSde(head).is_continuous());
        assert!(!PolicyHead::Categorical { n: 2 }.is_continuous());
        let wide = spec(
            &[8],
            PolicyHead::GaussianSde(SdeHead {
                action_dim: 5,
                ..head
            }),
            false,
        );
        assert_eq!(wide.validate(10_000), Err(SpecError::HeadSize));
    }

    #[test]
    fn validate_rejects_out_of_range_shapes() {
        let ok = spec(&[64, 64], PolicyHead::Gaussian { action_dim: 1 }, false);
        assert_eq!(ok.validate(10_000), Ok(()));
        assert!(matches!(
            ok.validate(100),
            Err(SpecError::OverCapacity {
                needed: 4482,
                capacity: 100
            })
        ));
        assert_eq!(
            spec(&[0], PolicyHead::Gaussian { action_dim: 1 }, false).validate(10_000),
            Err(SpecError::LayerWidth)
        );
        assert_eq!(
            spec(&[8], PolicyHead::Gaussian { action_dim: 0 }, false).validate(10_000),
            Err(SpecError::HeadSize)
        );
        assert_eq!(
            spec(&[8], PolicyHead::Categorical { n: 1 }, false).validate(10_000),
            Err(SpecError::HeadSize)
        );
        let mut bad_obs = ok.clone();
        bad_obs.obs_dim = 0;
        assert_eq!(bad_obs.validate(10_000), Err(SpecError::ObsDim));
    }
}
