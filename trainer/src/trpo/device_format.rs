//! The learner's policy in the device's format: its shared [`PolicySpec`] and the f32
//! parameters in the wire layout the device runs:
//! `[obs_mean[obs_dim], obs_scale[obs_dim]]` (only when the policy normalises
//! observations; scale = 1/sqrt(var + 1e-8), inputs clamped to ±10 after normalising), then
//! the MLP layers (weights row-major `[out][in]`, then bias), then the Gaussian log-std.

use tether_shared::policy::{self as shared, PolicySpec};

use super::distribution::ActionDistribution;
use super::normalizer::ObservationNormalizer;
use super::policy::Policy;

/// Why a policy cannot be described in the shared (device) format.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceFormatError {
    /// A dimension does not fit the wire format's integer fields or layer limit.
    #[error("policy shape does not fit the device format: {0}")]
    ShapeTooLarge(&'static str),
}

/// The shared [`PolicySpec`] of a policy, so the device can interpret [`export_f32`].
pub fn shared_spec(policy: &Policy, normalize_obs: bool) -> Result<PolicySpec, DeviceFormatError> {
    let obs_dim = u8::try_from(policy.obs_dim())
        .map_err(|_| DeviceFormatError::ShapeTooLarge("observation dimension > 255"))?;
    let hidden_sizes = policy.mlp().hidden_sizes();
    if hidden_sizes.len() > shared::MAX_HIDDEN_LAYERS {
        return Err(DeviceFormatError::ShapeTooLarge(
            "more hidden layers than the device allows",
        ));
    }
    let hidden = hidden_sizes
        .iter()
        .map(|&w| {
            u16::try_from(w).map_err(|_| DeviceFormatError::ShapeTooLarge("layer width > 65535"))
        })
        .collect::<Result<_, _>>()?;
    let head = match policy.head() {
        ActionDistribution::DiagGaussian { action_dim } => shared::PolicyHead::Gaussian {
            action_dim: u8::try_from(action_dim)
                .map_err(|_| DeviceFormatError::ShapeTooLarge("action dimension > 255"))?,
        },
        ActionDistribution::Categorical { n_actions } => shared::PolicyHead::Categorical {
            n: u8::try_from(n_actions)
                .map_err(|_| DeviceFormatError::ShapeTooLarge("more than 255 actions"))?,
        },
    };
    Ok(PolicySpec {
        obs_dim,
        hidden,
        head,
        normalize_obs,
    })
}

/// The policy (and its observation normaliser, if any) as the f32 parameter vector the
/// device loads.
pub fn export_f32(policy: &Policy, normalizer: Option<&ObservationNormalizer>) -> Vec<f32> {
    let mut out = Vec::with_capacity(policy.parameter_count() + 2 * policy.obs_dim());
    if let Some(normalizer) = normalizer {
        out.extend(normalizer.mean().iter().map(|&m| m as f32));
        out.extend(normalizer.scale().iter().map(|&s| s as f32));
    }
    out.extend(policy.parameters().iter().map(|&p| p as f32));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trpo::distribution::ActionDistribution;
    use nalgebra::DMatrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn layout_is_normalizer_then_mlp_then_log_std() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let policy = Policy::new(
            2,
            &[4],
            ActionDistribution::DiagGaussian { action_dim: 1 },
            -0.7,
            &mut rng,
        );
        let mut norm = ObservationNormalizer::new(2);
        norm.update(&DMatrix::from_row_slice(2, 2, &[0.0, 2.0, 1.0, 1.0]));
        let exported = export_f32(&policy, Some(&norm));
        assert_eq!(exported.len(), 4 + policy.parameter_count());
        assert_eq!(&exported[..2], &[1.0, 1.0]);
        approx::assert_relative_eq!(exported[2], 1.0, max_relative = 1e-6);
        approx::assert_relative_eq!(exported[3], 1e4, max_relative = 1e-6);
        assert_eq!(exported[exported.len() - 1], -0.7f32);
        assert_eq!(export_f32(&policy, None).len(), policy.parameter_count());
    }

    /// The f32 export run through the device's forward pass (`tether_shared`) matches the
    /// trainer's f64 forward pass within 1e-5 relative, with and without the normaliser,
    /// for both heads.
    #[test]
    fn shared_f32_forward_matches_the_f64_forward() {
        use crate::trpo::mlp::standard_normal;
        use tether_shared::policy::PolicyView;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for head in [
            ActionDistribution::DiagGaussian { action_dim: 2 },
            ActionDistribution::Categorical { n_actions: 3 },
        ] {
            let mut policy = Policy::new(4, &[64, 64], head, -0.3, &mut rng);
            // Perturb so the outputs are O(1) rather than the 0.01-gain initial ones.
            let params = policy
                .parameters()
                .map(|p| p + 0.2 * standard_normal(&mut rng));
            policy.set_parameters(params).expect("finite");
            let mut norm = ObservationNormalizer::new(4);
            norm.update(&DMatrix::from_fn(4, 50, |i, _| {
                3.0 * i as f64 + (1.0 + i as f64) * standard_normal(&mut rng)
            }));
            for normalizer in [None, Some(&norm)] {
                let spec = shared_spec(&policy, normalizer.is_some()).expect("fits");
                let exported = export_f32(&policy, normalizer);
                let view = PolicyView::new(&spec, &exported).expect("length matches the spec");
                let mut scratch = vec![0.0f32; spec.scratch_len()];
                let mut out = vec![0.0f32; spec.output_dim()];
                for _ in 0..20 {
                    let obs: Vec<f64> = (0..4)
                        .map(|i| 3.0 * i as f64 + 2.0 * standard_normal(&mut rng))
                        .collect();
                    let x = DMatrix::from_column_slice(4, 1, &obs);
                    let x = normalizer.map_or(x.clone(), |n| n.normalize(&x));
                    let expected = policy.outputs(&x);
                    let obs32: Vec<f32> = obs.iter().map(|&o| o as f32).collect();
                    view.forward(&obs32, &mut scratch, &mut out)
                        .expect("forward");
                    let error: f64 = expected
                        .iter()
                        .zip(&out)
                        .map(|(e, o)| (e - f64::from(*o)).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    assert!(
                        error <= 1e-5 * expected.norm(),
                        "f32 {out:?} vs f64 {expected}"
                    );
                }
                if let ActionDistribution::DiagGaussian { .. } = head {
                    let log_std = view.log_std().expect("Gaussian");
                    let expected: Vec<f32> = policy.log_std().iter().map(|&l| l as f32).collect();
                    assert_eq!(log_std, &expected[..]);
                }
            }
        }
    }
}
