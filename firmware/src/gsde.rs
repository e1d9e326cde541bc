//! State-dependent exploration (gSDE) on the device: the noise matrix `θ_ε` it draws and
//! holds, and the exploring step of a gSDE head (see `tether_shared::policy::sde` for the
//! definition).
//!
//! The device keeps two `features × action_dim` matrices beside the policy buffers: σ,
//! computed once when a gSDE policy starts running, and θ_ε, drawn from `N(0, σ²)` with the
//! episode's exploration stream. A step then costs two passes over the features the forward
//! pass already left in its scratch (noise `Σ z_i θ_ij` and variance `Σ (z_i σ_ij)²`) and no
//! Gaussian draw; nothing extra crosses the link.
//!
//! When θ_ε is drawn: before the first exploring step of a run (one collection round), after
//! a policy swap (σ changed), and every [`SdeHead::resample_every`] steps counted over the
//! run, as Stable-Baselines3 counts its rollout steps across episode boundaries
//! (`resample_every = 0`: once per run). A draw is `features × action_dim` Gaussians
//! (64 for a [64, 64] policy with one action), done inside the step that needs it: its cost
//! is in that step's time (`worst_step_us`) and in the firmware benchmark, against the
//! control period.

use tether_shared::PolicyHead;
use tether_shared::message::RefusalReason;
use tether_shared::plant::MAX_ACTION_DIM;
use tether_shared::policy::sde::{SdeHead, sde_noise_and_variance, sde_std_matrix};
use tether_shared::policy::{PolicySpec, gaussian_log_prob_with_variance};

use crate::policy_tiles::TiledPolicy;
use crate::sampler::Sampler;

/// Noise-matrix values a device holds by default: a 64-wide last hidden layer with
/// [`MAX_ACTION_DIM`] actions, or a 256-wide one with one action. Costs
/// `2 · 4 · capacity` bytes of RAM (σ and θ_ε).
pub const DEFAULT_NOISE_CAPACITY: usize = 64 * MAX_ACTION_DIM;

/// The gSDE state of a device that holds noise matrices of up to `N` values.
pub struct SdeNoise<const N: usize> {
    /// The running policy's gSDE head, `None` when it has another head.
    head: Option<SdeHead>,
    /// `features × action_dim`: the values of `std` and `theta` in use.
    len: usize,
    /// σ_ij, row-major `[feature][action]`.
    std: [f32; N],
    /// θ_ij ~ N(0, σ_ij²), row-major `[feature][action]`.
    theta: [f32; N],
    /// Whether θ_ε holds a draw for the current run and policy.
    drawn: bool,
    /// Exploring steps since the last draw.
    steps_since_draw: u32,
    /// Draws made (diagnostics and tests).
    draws: u32,
}

impl<const N: usize> Default for SdeNoise<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SdeNoise<N> {
    /// No gSDE policy loaded.
    pub const fn new() -> Self {
        SdeNoise {
            head: None,
            len: 0,
            std: [0.0; N],
            theta: [0.0; N],
            drawn: false,
            steps_since_draw: 0,
            draws: 0,
        }
    }

    /// Noise-matrix values this device holds.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Noise matrices drawn since start.
    pub fn draws(&self) -> u32 {
        self.draws
    }

    /// Whether this device can explore with a policy of `spec`: its noise matrix must fit.
    pub fn check_spec(spec: &PolicySpec) -> Result<(), RefusalReason> {
        if spec.noise_len() > N {
            Err(RefusalReason::OverCapacity)
        } else {
            Ok(())
        }
    }

    /// Prepares for `policy`, which starts running now: computes σ for a gSDE head (and
    /// asks for a fresh draw), forgets the head otherwise. False when σ cannot be computed
    /// (a spec past the capacity, or a σ that is not finite and positive: the commit's checks
    /// prevent both); the head is then left unloaded and an exploring step faults.
    pub fn load(&mut self, policy: &TiledPolicy<'_>) -> bool {
        self.head = None;
        self.drawn = false;
        let spec = policy.spec();
        let PolicyHead::GaussianSde(head) = spec.head else {
            return true;
        };
        let len = spec.noise_len();
        let (Some(log_std), Some(std)) = (policy.log_std(), self.std.get_mut(..len)) else {
            return false;
        };
        if !sde_std_matrix(&head, log_std, std) {
            return false;
        }
        self.len = len;
        self.head = Some(head);
        true
    }

    /// A new run begins: the next exploring step draws θ_ε first.
    pub fn restart(&mut self) {
        self.drawn = false;
    }

    /// One exploring step of the gSDE head: draws θ_ε first when due, writes
    /// `action = mean + Σ_i z_i θ_i·` and returns its log-density under
    /// `N(mean, Σ_i z_i² σ_i·² + ε)`. `None` when no gSDE head is loaded or a length does
    /// not fit (the caller faults).
    #[inline]
    pub fn explore(
        &mut self,
        sampler: &mut Sampler,
        features: &[f32],
        mean: &[f32],
        action: &mut [f32],
    ) -> Option<f32> {
        let head = self.head?;
        let actions = head.action_dim as usize;
        if !self.drawn
            || (head.resample_every != 0 && self.steps_since_draw >= u32::from(head.resample_every))
        {
            self.draw(sampler);
        }
        self.steps_since_draw = self.steps_since_draw.saturating_add(1);
        let (theta, std) = (self.theta.get(..self.len)?, self.std.get(..self.len)?);
        let mut noise = [0.0f32; MAX_ACTION_DIM];
        let mut variance = [0.0f32; MAX_ACTION_DIM];
        let (noise, variance) = (noise.get_mut(..actions)?, variance.get_mut(..actions)?);
        sde_noise_and_variance(features, theta, std, noise, variance);
        let (action, mean) = (action.get_mut(..actions)?, mean.get(..actions)?);
        for ((a, &m), &e) in action.iter_mut().zip(mean).zip(noise.iter()) {
            *a = m + e;
        }
        Some(gaussian_log_prob_with_variance(mean, variance, action))
    }

    /// θ_ij = σ_ij · N(0, 1), in row-major order, from the episode's exploration stream.
    fn draw(&mut self, sampler: &mut Sampler) {
        for (t, &s) in self.theta.iter_mut().zip(&self.std).take(self.len) {
            *t = s * sampler.standard_normal();
        }
        self.drawn = true;
        self.steps_since_draw = 0;
        self.draws = self.draws.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use tether_shared::policy::sde::SDE_EPSILON;

    use super::*;
    use crate::policy_tiles::TileLayout;

    fn head(resample_every: u16) -> SdeHead {
        SdeHead {
            action_dim: 2,
            full_std: true,
            use_expln: false,
            resample_every,
        }
    }

    /// A policy 2 → [3] → 2 whose log-std matrix is `log_std` (3 × 2), in the target layout.
    fn policy_params(head: SdeHead, log_std: f32) -> (PolicySpec, Vec<f32>) {
        let spec = PolicySpec {
            obs_dim: 2,
            hidden: heapless::Vec::from_slice(&[3]).unwrap(),
            head: PolicyHead::GaussianSde(head),
            normalize_obs: false,
        };
        let mut wire: Vec<f32> = (0..spec.param_count())
            .map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.2)
            .collect();
        let start = wire.len() - spec.log_std_len();
        wire[start..].fill(log_std);
        let mut tiled = std::vec![0.0f32; wire.len()];
        TileLayout::TARGET
            .scatter(&spec, 0, &wire, &mut tiled)
            .unwrap();
        (spec, tiled)
    }

    #[test]
    fn theta_is_held_between_draws_and_redrawn_on_schedule() {
        let (spec, params) = policy_params(head(3), -1.0);
        let policy = TiledPolicy::new(&spec, &params).unwrap();
        let mut noise = SdeNoise::<8>::new();
        assert!(noise.load(&policy));
        let mut sampler = Sampler::new(5);
        let features = [0.5f32, -0.25, 1.0];
        let mut action = [0.0f32; 2];
        let mut actions = Vec::new();
        for _ in 0..7 {
            noise
                .explore(&mut sampler, &features, &[0.0, 0.0], &mut action)
                .unwrap();
            actions.push(action);
        }
        // Same features, same θ: the same action until the next draw (steps 0, 3, 6).
        assert_eq!(noise.draws(), 3);
        assert_eq!(actions[0], actions[1]);
        assert_eq!(actions[1], actions[2]);
        assert_ne!(actions[2], actions[3]);
        assert_eq!(actions[3], actions[5]);
        assert_ne!(actions[5], actions[6]);
        // A new run draws before its first step, whatever the count.
        noise.restart();
        noise
            .explore(&mut sampler, &features, &[0.0, 0.0], &mut action)
            .unwrap();
        assert_eq!(noise.draws(), 4);
    }

    #[test]
    fn once_per_run_holds_theta_until_the_run_or_policy_changes() {
        let (spec, params) = policy_params(head(0), -1.0);
        let policy = TiledPolicy::new(&spec, &params).unwrap();
        let mut noise = SdeNoise::<8>::new();
        noise.load(&policy);
        let mut sampler = Sampler::new(6);
        let mut action = [0.0f32; 2];
        for _ in 0..1000 {
            noise
                .explore(&mut sampler, &[0.1, 0.2, 0.3], &[1.0, 1.0], &mut action)
                .unwrap();
        }
        assert_eq!(noise.draws(), 1);
        noise.load(&policy);
        noise
            .explore(&mut sampler, &[0.1, 0.2, 0.3], &[1.0, 1.0], &mut action)
            .unwrap();
        assert_eq!(noise.draws(), 2, "a swapped-in policy gets its own draw");
    }

    /// Over many draws the action's spread is the variance the log-probability uses, and
    /// the log-probability is that Gaussian's density.
    #[test]
    fn actions_follow_the_state_dependent_gaussian() {
        let (spec, params) = policy_params(head(1), -0.5);
        let policy = TiledPolicy::new(&spec, &params).unwrap();
        let mut noise = SdeNoise::<8>::new();
        noise.load(&policy);
        let mut sampler = Sampler::new(7);
        let features = [0.9f32, -0.3, 0.6];
        let mean = [0.2f32, -0.1];
        let sigma2 = libm::expf(-1.0);
        let variance: f32 = features.iter().map(|z| z * z * sigma2).sum::<f32>() + SDE_EPSILON;
        let n = 40_000;
        let mut sums = [0.0f64; 2];
        let mut squares = [0.0f64; 2];
        let mut action = [0.0f32; 2];
        for _ in 0..n {
            let log_prob = noise
                .explore(&mut sampler, &features, &mean, &mut action)
                .unwrap();
            let expected: f32 = (0..2)
                .map(|j| {
                    let d = action[j] - mean[j];
                    -0.5 * d * d / variance - 0.5 * libm::logf(variance) - 0.918_938_5
                })
                .sum();
            assert!((log_prob - expected).abs() < 1e-4);
            for j in 0..2 {
                let d = f64::from(action[j] - mean[j]);
                sums[j] += d;
                squares[j] += d * d;
            }
        }
        for j in 0..2 {
            let m = sums[j] / n as f64;
            let v = squares[j] / n as f64 - m * m;
            assert!(m.abs() < 0.02, "mean {m}");
            assert!(
                (v / f64::from(variance) - 1.0).abs() < 0.03,
                "var {v} vs {variance}"
            );
        }
    }

    #[test]
    fn other_heads_and_oversized_matrices_are_not_explored_with() {
        assert_eq!(
            SdeNoise::<5>::check_spec(&policy_params(head(1), 0.0).0),
            Err(RefusalReason::OverCapacity)
        );
        assert_eq!(
            SdeNoise::<6>::check_spec(&policy_params(head(1), 0.0).0),
            Ok(())
        );
        let mut noise = SdeNoise::<6>::new();
        let mut sampler = Sampler::new(1);
        let mut action = [0.0f32; 2];
        assert_eq!(
            noise.explore(&mut sampler, &[0.0; 3], &[0.0; 2], &mut action),
            None,
            "nothing loaded"
        );
        let plain = PolicySpec {
            head: PolicyHead::Gaussian { action_dim: 2 },
            ..policy_params(head(1), 0.0).0
        };
        let params = std::vec![0.1f32; plain.param_count()];
        assert!(noise.load(&TiledPolicy::new(&plain, &params).unwrap()));
        assert_eq!(
            noise.explore(&mut sampler, &[0.0; 3], &[0.0; 2], &mut action),
            None
        );
    }
}
