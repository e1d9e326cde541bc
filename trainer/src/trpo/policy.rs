//! The stochastic policy: an MLP, a head, and one flat parameter vector
//! `[MLP parameters (wire layout), head parameters (Gaussian log-std vector, or the gSDE
//! log-std matrix row-major)]`.

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use super::distribution::{ActionDistribution, DistributionBatch, HeadGradient};
use super::kernels::Precision;
use super::mlp::{ForwardCache, Mlp};

/// Why a parameter vector was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    /// The vector does not fit the architecture.
    #[error("policy parameter vector has {found} values, the architecture needs {expected}")]
    WrongLength {
        /// Length given.
        found: usize,
        /// Length the MLP plus head need.
        expected: usize,
    },
    /// A NaN or infinity would poison every later action.
    #[error("policy parameter {index} is not finite ({value})")]
    NonFinite {
        /// Position in the flat vector.
        index: usize,
        /// The offending value.
        value: f64,
    },
}

/// MLP + head + flat parameters.
#[derive(Clone, Debug)]
pub struct Policy {
    mlp: Mlp,
    head: ActionDistribution,
    params: DVector<f64>,
}

/// One forward pass of the policy over a batch at some parameters: the MLP activations
/// (reused by the JVP/VJP), the head parameters that were used and the log-stds they give
/// (the head parameters themselves for the Gaussian, one per action and sample for gSDE).
#[derive(Clone, Debug)]
pub struct PolicyEvaluation {
    cache: ForwardCache,
    /// A gSDE head's features (the last hidden layer, `width × N`, in f64); empty for the
    /// other heads.
    features: DMatrix<f64>,
    own: Vec<f64>,
    log_std: Vec<f64>,
}

impl PolicyEvaluation {
    /// The action distributions of the batch.
    pub fn distribution(&self) -> DistributionBatch<'_> {
        DistributionBatch {
            outputs: self.cache.output(),
            log_std: &self.log_std,
        }
    }

    /// The MLP activations of this pass.
    pub fn cache(&self) -> &ForwardCache {
        &self.cache
    }
}

impl Policy {
    /// A freshly initialised policy: orthogonal init with gains √2 (hidden) and 0.01
    /// (output), zero biases, every log-std set to `log_std_init`.
    pub fn new(
        obs_dim: usize,
        hidden: &[usize],
        head: ActionDistribution,
        log_std_init: f64,
        rng: &mut impl Rng,
    ) -> Self {
        let mlp = Mlp::new(obs_dim, hidden, head.mlp_output_dim());
        let weights = mlp.initial_parameters(std::f64::consts::SQRT_2, 0.01, rng);
        let params = DVector::from_iterator(
            mlp.parameter_count() + head.own_parameter_count(),
            weights.iter().copied().chain(std::iter::repeat_n(
                log_std_init,
                head.own_parameter_count(),
            )),
        );
        Self { mlp, head, params }
    }

    /// The same policy computing its large products in `precision` (single by default).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self {
            mlp: self.mlp.with_precision(precision),
            ..self
        }
    }

    /// The network architecture.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// The action distribution family.
    pub fn head(&self) -> ActionDistribution {
        self.head
    }

    /// Observation width the policy reads.
    pub fn obs_dim(&self) -> usize {
        self.mlp.input_dim()
    }

    /// Current flat parameters `[MLP, log-std]`.
    pub fn parameters(&self) -> &DVector<f64> {
        &self.params
    }

    /// Length of the flat parameter vector.
    pub fn parameter_count(&self) -> usize {
        self.params.len()
    }

    /// Replaces the parameters after checking length and finiteness; on error the policy
    /// is unchanged.
    pub fn set_parameters(&mut self, params: DVector<f64>) -> Result<(), PolicyError> {
        if params.len() != self.params.len() {
            return Err(PolicyError::WrongLength {
                found: params.len(),
                expected: self.params.len(),
            });
        }
        if let Some((index, value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PolicyError::NonFinite {
                index,
                value: *value,
            });
        }
        self.params = params;
        Ok(())
    }

    /// The Gaussian log-std at the current parameters (empty for categorical).
    pub fn log_std(&self) -> &[f64] {
        self.split(self.params.as_slice()).1
    }

    /// Splits a flat vector into its MLP and head parts.
    pub fn split<'a>(&self, params: &'a [f64]) -> (&'a [f64], &'a [f64]) {
        params.split_at(self.mlp.parameter_count())
    }

    /// Forward pass at arbitrary `params` over `observations` (`obs_dim × N`).
    pub fn evaluate(&self, params: &[f64], observations: &DMatrix<f64>) -> PolicyEvaluation {
        let (weights, own) = self.split(params);
        let cache = self.mlp.forward(weights, observations);
        let (features, log_std) = match self.head {
            ActionDistribution::StateDependent(sde) => {
                let features = self.mlp.features(&cache);
                let log_std = sde.log_std_per_sample(own, &features);
                (features, log_std)
            }
            _ => (DMatrix::zeros(0, 0), own.to_vec()),
        };
        PolicyEvaluation {
            cache,
            features,
            own: own.to_vec(),
            log_std,
        }
    }

    /// [`Policy::evaluate`] with a gSDE head's variance computed from the features of
    /// `held` instead of those at `params`: the features held fixed, as the learner's
    /// derivatives treat them (the finite-difference checks compare against this).
    #[cfg(test)]
    pub fn evaluate_holding_features(
        &self,
        params: &[f64],
        observations: &DMatrix<f64>,
        held: &PolicyEvaluation,
    ) -> PolicyEvaluation {
        let mut eval = self.evaluate(params, observations);
        if let ActionDistribution::StateDependent(sde) = self.head {
            eval.log_std = sde.log_std_per_sample(&eval.own, &held.features);
        }
        eval
    }

    /// Means (Gaussian) or logits (categorical) at the current parameters, `out × N`.
    pub fn outputs(&self, observations: &DMatrix<f64>) -> DMatrix<f64> {
        let (weights, _) = self.split(self.params.as_slice());
        self.mlp.forward(weights, observations).output().clone()
    }

    /// log π(a | s) at the current parameters for a batch.
    pub fn log_probs(&self, observations: &DMatrix<f64>, actions: &DMatrix<f64>) -> DVector<f64> {
        let eval = self.evaluate(self.params.as_slice(), observations);
        self.head.log_prob(eval.distribution(), actions)
    }

    /// Chains a gradient with respect to the distribution parameters back to the flat
    /// parameters: VJP through the MLP for the outputs; the Gaussian log-std part as is, a
    /// gSDE head's per-sample log-std part through its features (held fixed).
    pub fn backpropagate(
        &self,
        params: &[f64],
        eval: &PolicyEvaluation,
        head_gradient: &HeadGradient,
    ) -> DVector<f64> {
        let mlp_gradient = self.mlp.vjp(&eval.cache, &head_gradient.outputs);
        let own_gradient = match self.head {
            ActionDistribution::StateDependent(sde) => sde.own_gradient(
                &eval.own,
                &eval.features,
                &eval.log_std,
                head_gradient.log_std.as_slice(),
            ),
            _ => head_gradient.log_std.clone(),
        };
        DVector::from_iterator(
            params.len(),
            mlp_gradient.iter().chain(own_gradient.iter()).copied(),
        )
    }

    /// The head parameters' block of the Fisher applied to `v_own`, averaged over
    /// `samples`: `2·v` for the Gaussian's state-independent log-std (the same for every
    /// sample), `(1/N) Σ_s J(s)ᵀ 2 J(s) v` over the evaluated chunks for gSDE.
    pub fn own_fisher_product<'e>(
        &self,
        evaluations: impl Iterator<Item = &'e PolicyEvaluation>,
        v_own: &[f64],
        samples: usize,
    ) -> Vec<f64> {
        match self.head {
            ActionDistribution::StateDependent(sde) => {
                let mut sum = vec![0.0; v_own.len()];
                for eval in evaluations {
                    let part =
                        sde.own_fisher_product(&eval.own, &eval.features, &eval.log_std, v_own);
                    sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
                }
                let inv_n = 1.0 / samples.max(1) as f64;
                sum.into_iter().map(|x| x * inv_n).collect()
            }
            _ => {
                let own_fisher = self.head.own_parameter_fisher();
                v_own.iter().map(|x| own_fisher * x).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn log_std_follows_the_mlp_parameters_and_starts_at_the_configured_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let policy = Policy::new(
            3,
            &[8],
            ActionDistribution::DiagGaussian { action_dim: 2 },
            -0.5,
            &mut rng,
        );
        assert_eq!(policy.parameter_count(), policy.mlp().parameter_count() + 2);
        assert_eq!(policy.log_std(), &[-0.5, -0.5]);
    }

    #[test]
    fn set_parameters_refuses_nan_and_wrong_length_and_keeps_the_old_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut policy = Policy::new(
            2,
            &[4],
            ActionDistribution::Categorical { n_actions: 3 },
            0.0,
            &mut rng,
        );
        let before = policy.parameters().clone();
        let mut bad = before.clone();
        bad[3] = f64::NAN;
        assert!(matches!(
            policy.set_parameters(bad),
            Err(PolicyError::NonFinite { index: 3, .. })
        ));
        assert!(matches!(
            policy.set_parameters(DVector::zeros(2)),
            Err(PolicyError::WrongLength { .. })
        ));
        assert_eq!(policy.parameters(), &before);
    }
}
