//! Plant parameters and their per-episode ranges travel over the protocol to every kind of
//! simulated device — in-memory, pseudo-terminal, and the Cortex-M image in QEMU — and the
//! firmware applies them with the same code everywhere:
//!
//! - on an in-memory device, every episode is exactly what the firmware's model does when it
//!   draws that episode's values from `episode_seed(run seed, episode, PlantVariation)`
//!   (a replica on the host, step by step, bit for bit), and it differs from the nominal
//!   plant's;
//! - a pty device and a QEMU device produce the same bits as the in-memory one;
//! - the same run seed reproduces the episodes, another seed draws other plants;
//! - a device whose physics is fixed (`tether sim --config`'s rig) refuses the host's
//!   settings with a reason the error names.
//!
//! The QEMU part needs the images of `scripts/cross.sh` (as `qemu_bit_exact` does).

use std::sync::Arc;
use std::time::Duration;

use tether_firmware::plant::{Action, Plant, Qube};
use tether_firmware::safety::clamp_continuous;
use tether_hil_tests::qemu;
use tether_shared::message::{ParamRange, ParamSetting, PlantParams, RefusalReason, RunMode};
use tether_shared::policy::PolicyView;
use tether_shared::seeds::{EpisodeStream, SplitMix64, episode_seed};
use tether_shared::{PlantDescription, PolicySpec};
use tether_trainer::device::DeviceError;
use tether_trainer::device::qemu::{QemuExtras, QemuTiming};
use tether_trainer::device::simulated::SimDeviceSpec;
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, CollectedEpisode, Recovery};
use tether_trainer::run::{DevicesConfig, LinkKind, TimeoutsConfig};
use tether_trainer::training::fleet::FleetError;
use tether_trainer::training::{Fleet, FleetSpec};

const SEED: u64 = 1234;
const FIRST_EPISODE: u32 = 40;
const EPISODES: u32 = 3;

/// A rig unlike the nominal model in every way the parameters allow: heavier, longer,
/// frictional, a weaker amplifier, coarser encoders, and every imperfection, several of
/// them drawn per episode, half the draws at an end of their range.
fn settings() -> PlantParams {
    let mut params = PlantParams::default();
    for (name, value, range) in [
        ("pendulum_mass", Some(0.027), Some((0.9, 1.1))),
        ("arm_length", None, Some((0.8, 1.2))),
        ("arm_coulomb_friction", Some(0.001), None),
        ("max_voltage", Some(5.0), None),
        ("encoder_counts", None, Some((1024.0, 4096.0))),
        ("latency_steps", None, Some((0.0, 2.0))),
        ("angle_noise_std", Some(0.002), None),
        ("velocity_noise_std", None, Some((0.0, 0.3))),
        ("deadzone", Some(0.2), None),
    ] {
        let range = range.map(|(low, high)| ParamRange { low, high });
        let setting = ParamSetting::new(name, value, range).expect("a short name");
        params.settings.push(setting).expect("room");
    }
    // Half the draws at an end of their range: the share travels with the ranges.
    params.range_end_share = 0.5;
    params
}

fn fleet(link: LinkKind, ports: &[String], params: Option<PlantParams>) -> Fleet {
    let devices = DevicesConfig {
        sim: if ports.is_empty() { 1 } else { 0 },
        link,
        ports: ports.to_vec(),
        ..DevicesConfig::default()
    };
    let spec = FleetSpec::new(&devices, &TimeoutsConfig::default(), 0, Some("qube"))
        .expect("a valid fleet")
        .with_plant_params(params);
    Fleet::connect(&spec).expect("the devices connect and take the parameters")
}

/// A [32, 32] policy with a normaliser, weights in ±0.5 from a fixed seed.
fn policy(plant: &PlantDescription) -> (PolicySpec, Arc<Vec<f32>>) {
    let spec = PolicySpec::for_plant(plant, &[32, 32], true);
    let mut rng = SplitMix64::new(7);
    let norm = spec.normalizer_len();
    let obs = spec.obs_dim as usize;
    let params = (0..spec.param_count())
        .map(|i| match i {
            i if i < obs => 0.0,
            i if i < norm => 0.5,
            _ => rng.uniform(-0.5, 0.5),
        })
        .collect();
    (spec, Arc::new(params))
}

/// `EPISODES` deterministic episodes from the fleet's one device, run seed `seed`.
fn episodes(fleet: &mut Fleet, seed: u64) -> Vec<CollectedEpisode> {
    let (spec, params) = policy(&fleet.plant);
    let request = CollectRequest {
        version: 1,
        spec,
        params,
        first_episode: FIRST_EPISODE,
        seed,
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(EPISODES),
        silence_timeout: Duration::from_secs(20),
        recovery: Recovery::default(),
    };
    let client = fleet.clients.first_mut().expect("one device");
    let rollout = collect(client, &mut None, &request).expect("a round of episodes");
    assert_eq!(rollout.episodes.len(), EPISODES as usize);
    rollout.episodes
}

fn bits(episodes: &[CollectedEpisode]) -> Vec<Vec<u32>> {
    episodes
        .iter()
        .map(|e| {
            e.trajectory
                .records()
                .values()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

/// The device's deterministic episode `episode` of run `seed`, computed on the host with
/// the firmware's model: parameters drawn from the episode's own seed, then the control
/// loop (observe, forward pass, clamp, actuate), records as the device writes them.
fn replica(params: &PlantParams, seed: u64, episode: u32) -> Vec<u32> {
    let mut plant = Qube::new();
    plant.set_params(params).expect("valid settings");
    plant.vary(episode_seed(seed, episode, EpisodeStream::PlantVariation));
    plant.reset(episode_seed(seed, episode, EpisodeStream::InitialState));
    let description = plant.description();
    let (spec, weights) = policy(&description);
    let view = PolicyView::new(&spec, &weights).expect("a policy");
    let (mut obs, mut scratch, mut mean) = ([0.0f32; 6], vec![0.0f32; 128], [0.0f32; 1]);
    let mut records = Vec::new();
    for _ in 0..description.episode_steps {
        plant.observe(&mut obs);
        view.forward(&obs, &mut scratch, &mut mean)
            .expect("forward");
        let mut applied = mean;
        clamp_continuous(&description.action, &mut applied);
        let outcome = plant.actuate(Action::Continuous(&applied));
        records.extend(obs.iter().chain(&mean).map(|v| v.to_bits()));
        records.extend([outcome.reward.to_bits(), 0.0f32.to_bits()]);
        if outcome.terminated {
            break;
        }
    }
    records
}

#[test]
fn memory_devices_draw_every_episode_from_its_seed_and_pty_devices_agree() {
    let params = settings();
    let mut memory = fleet(LinkKind::Memory, &[], Some(params.clone()));
    let on_memory = episodes(&mut memory, SEED);
    for (k, episode) in bits(&on_memory).iter().enumerate() {
        let id = FIRST_EPISODE + k as u32;
        assert_eq!(
            *episode,
            replica(&params, SEED, id),
            "episode {id}: the device's records are not the firmware model's with the \
             episode's draw"
        );
    }
    // Reproducible, and another run seed draws other plants (and other initial states).
    assert_eq!(bits(&episodes(&mut memory, SEED)), bits(&on_memory));
    assert_ne!(bits(&episodes(&mut memory, SEED + 1)), bits(&on_memory));

    let mut nominal = fleet(LinkKind::Memory, &[], None);
    let on_nominal = bits(&episodes(&mut nominal, SEED));
    for (a, b) in on_nominal.iter().zip(&bits(&on_memory)) {
        assert_ne!(a, b, "the parameters changed nothing");
    }

    let mut pty = fleet(LinkKind::Pty, &[], Some(params));
    assert_eq!(bits(&episodes(&mut pty, SEED)), bits(&on_memory));
}

#[test]
fn qemu_devices_apply_the_same_parameters_bit_for_bit() {
    let qemu = qemu::start("qube", QemuTiming::FreeRunning, QemuExtras::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let port = [qemu.pty().to_string_lossy().into_owned()];
    let params = settings();
    let mut on_qemu = fleet(LinkKind::Memory, &port, Some(params.clone()));
    let mut on_host = fleet(LinkKind::Memory, &[], Some(params));
    let qemu_bits = bits(&episodes(&mut on_qemu, SEED));
    assert_eq!(
        qemu_bits,
        bits(&episodes(&mut on_host, SEED)),
        "{:?}",
        qemu.output()
    );
    let mut nominal = fleet(LinkKind::Memory, &[], None);
    assert_ne!(qemu_bits, bits(&episodes(&mut nominal, SEED)));
    let steps: usize = qemu_bits.iter().map(Vec::len).sum::<usize>() / 9;
    println!("{steps} steps of a randomised, imperfect qube bit-identical on QEMU and the host");
}

/// A rig started with fixed parameters (as `tether sim --config` starts one) runs them and
/// refuses the host's, and the trainer's error says why.
#[test]
fn a_rig_with_fixed_physics_refuses_the_hosts_parameters() {
    let fixed = settings();
    let spec = SimDeviceSpec {
        fixed_params: Some(&fixed),
        ..SimDeviceSpec::virtual_time("qube")
    };
    let (path, _board) = spec.board().expect("a rig").spawn_pty().expect("a pty");
    let port = [path.to_string_lossy().into_owned()];
    let devices = DevicesConfig {
        sim: 0,
        ports: port.to_vec(),
        ..DevicesConfig::default()
    };
    let fleet_spec = FleetSpec::new(&devices, &TimeoutsConfig::default(), 0, Some("qube"))
        .expect("a valid fleet");
    let refused = Fleet::connect(
        &fleet_spec
            .clone()
            .with_plant_params(Some(PlantParams::default())),
    );
    let err = refused.err().expect("the rig refuses");
    assert!(
        matches!(
            &err,
            FleetError::Device(DeviceError::ParamsRefused {
                reason: RefusalReason::FixedPhysics,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("physics is its own"), "{err}");
    // Told nothing, the trainer trains on the rig's own physics: the fixed parameters.
    let mut rig = Fleet::connect(&fleet_spec).expect("the rig connects");
    let mut told = fleet(LinkKind::Memory, &[], Some(fixed));
    assert_eq!(
        bits(&episodes(&mut rig, SEED)),
        bits(&episodes(&mut told, SEED))
    );
}
