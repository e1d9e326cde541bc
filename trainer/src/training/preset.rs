//! Training presets: the settings that suit one plant — the learner's hyperparameters and
//! the run's step counts — in one table. Adding a plant is one entry in [`table`].
//!
//! A run takes the preset of the plant its devices report. A plant with no entry (a user's
//! own rig) trains with the [`GENERIC`] preset; `preset = "<name>"` in a config file picks
//! another entry instead.

use serde::Serialize;

use crate::trpo::hyperparams::TrpoConfig;

/// Name of the preset for plants without their own: SB3-contrib's TRPO defaults with a
/// running observation normaliser (an unknown rig's observations come in unknown units; the
/// normaliser brings them to the scale the first tanh layer expects), 2048 steps per
/// iteration, 1 000 000 steps.
pub const GENERIC: &str = "generic";

/// The settings a run starts from before its config file and flags. Serialises as the
/// run configuration's keys (`preset`, `total_steps`, `steps_per_iteration`, `[trpo]`), so a
/// file can be laid over it key by key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preset {
    /// The preset's name: a plant's name, or [`GENERIC`].
    #[serde(rename = "preset")]
    pub name: &'static str,
    /// Environment steps of the whole run, summed over devices.
    pub total_steps: u64,
    /// Environment steps per iteration, summed over devices.
    pub steps_per_iteration: u64,
    /// The learner's hyperparameters.
    pub trpo: TrpoConfig,
}

/// Every preset, one entry per plant and the generic one last.
///
/// * `pendulum` (Pendulum-v1, rl-zoo3): 2 envs × 1024 steps, γ 0.9, 15 critic epochs of 128.
/// * `cartpole` (CartPole-v1, rl-zoo3): 2 envs × 512 steps, damping 1e-3, λ 0.98, γ 0.99,
///   20 critic epochs of 512.
/// * `qube` (Quanser QUBE-Servo 2, our choice, not from the zoo): 250 Hz control and 5 s
///   episodes of 1250 steps. γ 0.995 gives a 200-step (0.8 s) horizon, about one swing of
///   the pendulum; λ 0.97; 20 000 steps per iteration = 16 full episodes (80 s of plant
///   time, so two devices refresh the policy every 40 s: with 8 episodes per update seeds
///   kept an evaluation start that failed, with 16 none of seeds 0–2 did); Fisher-vector
///   products on every 10th sample (SB3's `sub_sampling_factor`; 2 000 samples still pin
///   down a 4 700-parameter step, and the conjugate gradient becomes a small part of the
///   update); 5 critic epochs of 256 (as many Adam steps per update as 10 epochs over 10 000
///   samples, half the value fit's cost over a run); observation normalisation on,
///   because the filtered velocities reach tens of rad/s while the angle terms are in
///   [−1, 1] (unnormalised, they saturate the first tanh layer); 3 M steps (≈ 3.3 h of
///   plant time on one rig, about 1.7 h with two): at 2 M some seeds already balance,
///   others still wobble about the top; README, "Results", has what each seed reaches.
/// * [`GENERIC`]: see there.
pub fn table() -> Vec<Preset> {
    let sb3 = TrpoConfig::default;
    vec![
        Preset {
            name: "pendulum",
            total_steps: 100_000,
            steps_per_iteration: 2 * 1024,
            trpo: TrpoConfig {
                gamma: 0.9,
                n_critic_updates: 15,
                critic_batch_size: 128,
                ..sb3()
            },
        },
        Preset {
            name: "cartpole",
            total_steps: 100_000,
            steps_per_iteration: 2 * 512,
            trpo: TrpoConfig {
                cg_damping: 1e-3,
                gae_lambda: 0.98,
                gamma: 0.99,
                critic_learning_rate: 1e-3,
                n_critic_updates: 20,
                critic_batch_size: 512,
                ..sb3()
            },
        },
        Preset {
            name: "qube",
            total_steps: 3_000_000,
            steps_per_iteration: 20_000,
            trpo: TrpoConfig {
                gamma: 0.995,
                gae_lambda: 0.97,
                n_critic_updates: 5,
                critic_batch_size: 256,
                normalize_observations: true,
                sub_sampling_factor: 10,
                ..sb3()
            },
        },
        Preset {
            name: GENERIC,
            total_steps: 1_000_000,
            steps_per_iteration: 2048,
            trpo: TrpoConfig {
                normalize_observations: true,
                ..sb3()
            },
        },
    ]
}

impl Preset {
    /// The entry called `name` (a plant's name or [`GENERIC`]), if there is one.
    pub fn named(name: &str) -> Option<Preset> {
        table().into_iter().find(|p| p.name == name)
    }

    /// The generic preset.
    pub fn generic() -> Preset {
        Self::named(GENERIC).unwrap_or_else(|| unreachable!("the table has a generic entry"))
    }

    /// The names in the table, for error messages.
    pub fn names() -> Vec<&'static str> {
        table().into_iter().map(|p| p.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_zoo_and_validate() {
        let pendulum = Preset::named("pendulum").expect("known");
        assert_eq!(
            (
                pendulum.steps_per_iteration,
                pendulum.trpo.gamma,
                pendulum.trpo.n_critic_updates
            ),
            (2048, 0.9, 15)
        );
        let cartpole = Preset::named("cartpole").expect("known");
        assert_eq!(
            (
                cartpole.steps_per_iteration,
                cartpole.trpo.cg_damping,
                cartpole.trpo.critic_batch_size
            ),
            (1024, 1e-3, 512)
        );
        let qube = Preset::named("qube").expect("known");
        assert!(qube.trpo.normalize_observations);
        assert_eq!(
            (qube.total_steps, qube.steps_per_iteration),
            (3_000_000, 20_000)
        );
        assert_eq!(
            (qube.trpo.sub_sampling_factor, qube.trpo.n_critic_updates),
            (10, 5)
        );
        for preset in table() {
            assert_eq!(preset.trpo.validate(), Ok(()), "{}", preset.name);
            assert!(preset.total_steps >= preset.steps_per_iteration);
        }
        assert_eq!(Preset::named("segway"), None);
    }

    #[test]
    fn every_simulated_plant_has_a_preset_and_names_are_unique() {
        for plant in tether_firmware::plant::PLANT_NAMES {
            assert!(Preset::named(plant).is_some(), "{plant}");
        }
        let mut names = Preset::names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), table().len());
    }

    #[test]
    fn the_generic_preset_is_sb3s_defaults_with_observation_normalisation() {
        let generic = Preset::generic();
        assert_eq!(generic.name, GENERIC);
        assert_eq!(
            generic.trpo,
            TrpoConfig {
                normalize_observations: true,
                ..TrpoConfig::default()
            }
        );
        assert_eq!(
            (generic.total_steps, generic.steps_per_iteration),
            (1_000_000, 2048)
        );
    }

    #[test]
    fn serialises_as_the_run_configurations_keys() {
        let table = toml::Table::try_from(Preset::named("qube").expect("known")).expect("toml");
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["preset", "steps_per_iteration", "total_steps", "trpo"]
        );
        assert_eq!(table["preset"].as_str(), Some("qube"));
    }

    #[test]
    fn preset_configs_round_trip_exactly_as_plain_json_numbers() {
        for preset in table() {
            let config = preset.trpo;
            let back: TrpoConfig =
                serde_json::from_str(&serde_json::to_string(&config).expect("finite"))
                    .expect("own output");
            assert_eq!(back, config);
            for (a, b) in [
                (config.target_kl, back.target_kl),
                (config.cg_damping, back.cg_damping),
                (config.cg_tolerance, back.cg_tolerance),
                (config.line_search_shrink, back.line_search_shrink),
                (config.gamma, back.gamma),
                (config.gae_lambda, back.gae_lambda),
                (config.critic_learning_rate, back.critic_learning_rate),
                (config.log_std_init, back.log_std_init),
            ] {
                assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
