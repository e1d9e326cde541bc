//! f32 export of the policy in the shared wire layout the device runs:
//! `[obs_mean[obs_dim], obs_scale[obs_dim]]` (only when the policy normalises
//! observations; scale = 1/sqrt(var + 1e-8), inputs clamped to ±10 after normalising), then
//! the MLP layers (weights row-major `[out][in]`, then bias), then the Gaussian log-std.

use super::normalizer::ObservationNormalizer;
use super::policy::Policy;

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
    use crate::trpo::distribution::PolicyHead;
    use nalgebra::DMatrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn layout_is_normalizer_then_mlp_then_log_std() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let policy = Policy::new(
            2,
            &[4],
            PolicyHead::DiagGaussian { action_dim: 1 },
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
}
