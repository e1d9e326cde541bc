//! Seeded random policies and observations for the export tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tether_shared::{ActionSpace, PlantDescription, PolicySpec};

use super::DeployedPolicy;
use crate::run::PolicyFile;

/// Which head a test policy has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Gaussian over two actions with bounds `[-1.5, 1.5]` and `[-0.5, 2]`.
    Continuous,
    /// Categorical over four choices.
    Discrete,
}

/// Observation size of every test policy.
pub const OBS_DIM: usize = 3;

/// A policy of the given shape with weights of a trained network's scale (each unit's
/// pre-activation of order 1 for observations of order 1).
pub fn random_policy(head: Head, hidden: &[u16], normalize_obs: bool, seed: u64) -> DeployedPolicy {
    let action = match head {
        Head::Continuous => ActionSpace::Continuous {
            low: heapless::Vec::from_slice(&[-1.5, -0.5]).unwrap_or_default(),
            high: heapless::Vec::from_slice(&[1.5, 2.0]).unwrap_or_default(),
        },
        Head::Discrete => ActionSpace::Discrete { n: 4 },
    };
    let plant = PlantDescription {
        name: heapless::String::try_from("testplant").unwrap_or_default(),
        obs_dim: OBS_DIM as u8,
        action,
        control_rate_hz: 50.0,
        episode_steps: 200,
    };
    let spec = PolicySpec::for_plant(&plant, hidden, normalize_obs);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = Vec::with_capacity(spec.param_count());
    if normalize_obs {
        params.extend((0..OBS_DIM).map(|_| rng.random_range(-1.0..1.0f32)));
        params.extend((0..OBS_DIM).map(|_| rng.random_range(0.2..3.0f32)));
    }
    let last = spec.hidden.len();
    for (index, (inputs, outputs)) in spec.layers().enumerate() {
        // Hidden units of order 1 (some saturated), actions mostly inside the bounds.
        let gain = if index == last { 0.5 } else { 1.5 };
        let bound = gain * (3.0 / inputs as f32).sqrt();
        params.extend((0..inputs * outputs).map(|_| rng.random_range(-bound..bound)));
        params.extend((0..outputs).map(|_| rng.random_range(-0.5..0.5f32)));
    }
    params.extend((0..spec.log_std_len()).map(|_| rng.random_range(-1.0..0.0f32)));
    DeployedPolicy::new(PolicyFile { spec, params }, plant, 7).expect("a valid test policy")
}

/// `count` observations, uniform in `[-3, 3]` per value, row after row.
pub fn random_observations(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count * OBS_DIM)
        .map(|_| rng.random_range(-3.0..3.0f32))
        .collect()
}

/// Every (head, hidden layers, normaliser) combination the export tests cover.
pub fn shapes() -> Vec<(Head, Vec<u16>, bool)> {
    let mut shapes = Vec::new();
    for head in [Head::Continuous, Head::Discrete] {
        for hidden in [vec![], vec![16], vec![64, 32]] {
            for normalize in [false, true] {
                shapes.push((head, hidden.clone(), normalize));
            }
        }
    }
    shapes
}
