//! Generalised advantage estimation, GAE(γ, λ) (Schulman et al. 2016), over one episode.
//!
//! δₜ = rₜ + γ·V(sₜ₊₁) − V(sₜ), Aₜ = δₜ + γλ·Aₜ₊₁, and the value targets are Aₜ + V(sₜ).
//! After the last step, V(s_T) is 0 when the episode terminated (the plant reached a
//! terminal state) and V(final observation) when it was truncated (time limit or batch cut).

/// Advantages and value targets of one episode.
#[derive(Clone, Debug, PartialEq)]
pub struct AdvantageEstimate {
    /// Aₜ per step.
    pub advantages: Vec<f64>,
    /// Aₜ + V(sₜ) per step: the regression targets of the value function.
    pub returns: Vec<f64>,
}

/// GAE(γ, λ) of one episode: `rewards[t]`, `values[t] = V(sₜ)`, and the value after the
/// last step (`0` for a terminated episode, `V(final observation)` for a truncated one).
pub fn generalized_advantages(
    rewards: &[f64],
    values: &[f64],
    value_after_last_step: f64,
    gamma: f64,
    lambda: f64,
) -> AdvantageEstimate {
    debug_assert_eq!(rewards.len(), values.len());
    let mut advantages = vec![0.0; rewards.len()];
    let mut next_value = value_after_last_step;
    let mut running = 0.0;
    for t in (0..rewards.len()).rev() {
        let delta = rewards[t] + gamma * next_value - values[t];
        running = delta + gamma * lambda * running;
        advantages[t] = running;
        next_value = values[t];
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    AdvantageEstimate {
        advantages,
        returns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    const REWARDS: [f64; 3] = [1.0, 2.0, 3.0];
    const VALUES: [f64; 3] = [0.5, 1.0, 1.5];
    const GAMMA: f64 = 0.9;
    const LAMBDA: f64 = 0.8;

    /// Hand computation: δ₂ = 3 + 0.9·V_T − 1.5, δ₁ = 2 + 0.9·1.5 − 1 = 2.35,
    /// δ₀ = 1 + 0.9·1 − 0.5 = 1.4, A₂ = δ₂, A₁ = δ₁ + 0.72·A₂, A₀ = δ₀ + 0.72·A₁.
    fn hand(v_after: f64) -> [f64; 3] {
        let a2 = 3.0 + 0.9 * v_after - 1.5;
        let a1 = 2.35 + 0.72 * a2;
        let a0 = 1.4 + 0.72 * a1;
        [a0, a1, a2]
    }

    #[test]
    fn terminated_episode_does_not_bootstrap() {
        let est = generalized_advantages(&REWARDS, &VALUES, 0.0, GAMMA, LAMBDA);
        // A₂ = 1.5, A₁ = 2.35 + 1.08 = 3.43, A₀ = 1.4 + 2.4696 = 3.8696.
        let expected = [3.8696, 3.43, 1.5];
        for t in 0..3 {
            assert_abs_diff_eq!(est.advantages[t], expected[t], epsilon = 1e-12);
            assert_abs_diff_eq!(est.advantages[t], hand(0.0)[t], epsilon = 1e-12);
            assert_abs_diff_eq!(est.returns[t], expected[t] + VALUES[t], epsilon = 1e-12);
        }
    }

    #[test]
    fn truncated_episode_bootstraps_from_the_final_value() {
        let est = generalized_advantages(&REWARDS, &VALUES, 2.0, GAMMA, LAMBDA);
        // A₂ = 3 + 1.8 − 1.5 = 3.3, A₁ = 2.35 + 2.376 = 4.726, A₀ = 1.4 + 3.40272 = 4.80272.
        let expected = [4.80272, 4.726, 3.3];
        for t in 0..3 {
            assert_abs_diff_eq!(est.advantages[t], expected[t], epsilon = 1e-12);
            assert_abs_diff_eq!(est.advantages[t], hand(2.0)[t], epsilon = 1e-12);
        }
    }

    #[test]
    fn lambda_one_gives_discounted_return_minus_value() {
        let est = generalized_advantages(&REWARDS, &VALUES, 0.0, GAMMA, 1.0);
        let g0 = 1.0 + 0.9 * 2.0 + 0.81 * 3.0;
        assert_abs_diff_eq!(est.returns[0], g0, epsilon = 1e-12);
    }
}
