//! The Cortex-M build computes what the host build computes, bit for bit.
//!
//! Each test runs the same policy, seed and episodes on a QEMU device (the
//! `qemu-mps2-an386` board image of a plant, built by `scripts/cross.sh`: Thumb-2 code, the
//! assembly layer kernels, the single-precision FPU) and on the host's simulated device, and
//! compares every transition: observations, sampled actions, rewards, log-probabilities and
//! episode endings as f32 bits. Only the timing fields differ.
//!
//! The policy shapes reach every path of the Cortex-M kernels
//! (`firmware/src/policy_tiles/cortex_m.rs`): 16-row tiles over 3, 4, 6, 16, 64 and 70 inputs
//! (whole groups of four and remainders), the portable 8- and 4-row tiles, single rows over
//! 8-input groups and remainders, hidden (with tanh, saturating) and output layers, Gaussian
//! and categorical heads. This pins that assembly to the shared reference forward pass.
//!
//! A missing image fails the test (run `scripts/cross.sh`, as `scripts/test.sh` does).

use std::sync::Arc;
use std::time::Duration;

use tether_firmware::plant::AnyPlant;
use tether_firmware::sim::{SimBoard, SimConfig, SimHandle};
use tether_hil_tests::qemu;
use tether_shared::PolicySpec;
use tether_shared::message::RunMode;
use tether_shared::seeds::SplitMix64;
use tether_trainer::device::qemu::QemuTiming;
use tether_trainer::device::transport::POLL_INTERVAL;
use tether_trainer::device::{ClientConfig, DeviceClient, DeviceLink};
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, CollectedEpisode, Recovery};
use tether_trainer::trpo::batch::EpisodeEnding;

fn sim_client(plant: &str) -> (DeviceClient, SimHandle) {
    let plant = AnyPlant::by_name(plant).expect("a plant model");
    let (mut host, board) = SimBoard::new(plant, SimConfig::default()).spawn_memory();
    host.set_timeout(POLL_INTERVAL);
    let client = DeviceClient::connect(
        DeviceLink::new("sim", Box::new(host)),
        ClientConfig::default(),
    )
    .expect("handshake with the simulated device");
    (client, board)
}

/// Parameters for `spec` from `seed`: normaliser means near 0 and scales in [0.5, 2],
/// weights in ±`gain` (large enough that some hidden units saturate), log-stds near −0.5.
fn params(spec: &PolicySpec, seed: u64, gain: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let n = spec.param_count();
    let obs = spec.obs_dim as usize;
    let norm = spec.normalizer_len();
    let log_std_start = n - spec.log_std_len();
    (0..n)
        .map(|i| {
            if i < norm {
                if i < obs {
                    rng.uniform(-0.5, 0.5)
                } else {
                    rng.uniform(0.5, 2.0)
                }
            } else if i >= log_std_start {
                rng.uniform(-0.7, -0.3)
            } else {
                rng.uniform(-gain, gain)
            }
        })
        .collect()
}

/// `episodes` episodes of `mode` from `client`, starting at episode 40 with seed 1234.
fn episodes(
    client: &mut DeviceClient,
    spec: &PolicySpec,
    params: &Arc<Vec<f32>>,
    mode: RunMode,
    episodes: u32,
    active: &mut Option<u32>,
) -> Vec<CollectedEpisode> {
    let version = active.map_or(1, |v| v + 1);
    let request = CollectRequest {
        version,
        spec: spec.clone(),
        params: params.clone(),
        first_episode: 40,
        seed: 1234,
        mode,
        steps: None,
        episodes: Some(episodes),
        silence_timeout: Duration::from_secs(20),
        recovery: Recovery::default(),
    };
    let rollout = collect(client, active, &request).expect("a round of episodes");
    assert_eq!(
        rollout.episodes.len(),
        episodes as usize,
        "{:?}",
        rollout.rejections
    );
    rollout.episodes
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Asserts the two runs' episodes are the same bits, apart from timing; returns the steps
/// compared.
fn assert_same(label: &str, qemu: &[CollectedEpisode], host: &[CollectedEpisode]) -> usize {
    assert_eq!(qemu.len(), host.len(), "{label}: episode count");
    let mut steps = 0;
    for (k, (q, h)) in qemu.iter().zip(host).enumerate() {
        let at = format!("{label}, episode {} ({k})", h.episode);
        assert_eq!(q.episode, h.episode, "{at}: id");
        assert_eq!(q.len(), h.len(), "{at}: length");
        // Whole records: observation, sampled action, reward and log-probability.
        let (q_values, h_values) = (
            q.trajectory.records().values(),
            h.trajectory.records().values(),
        );
        if let Some(i) = (0..q_values.len().max(h_values.len()))
            .find(|&i| q_values.get(i).map(|v| v.to_bits()) != h_values.get(i).map(|v| v.to_bits()))
        {
            let width = q.trajectory.layout().width();
            panic!(
                "{at}: records differ first at step {}, value {}: QEMU {:?}, host {:?}",
                i / width,
                i % width,
                q_values.get(i),
                h_values.get(i)
            );
        }
        match (q.trajectory.ending(), h.trajectory.ending()) {
            (EpisodeEnding::Terminated, EpisodeEnding::Terminated) => {}
            (
                EpisodeEnding::Truncated { final_obs: a },
                EpisodeEnding::Truncated { final_obs: b },
            ) => assert_eq!(bits(a), bits(b), "{at}: final observation"),
            (a, b) => panic!("{at}: endings differ: QEMU {a:?}, host {b:?}"),
        }
        assert_eq!(
            q.complete_return.map(f32::to_bits),
            h.complete_return.map(f32::to_bits),
            "{at}: return"
        );
        steps += q.len();
    }
    steps
}

/// Runs `explore` sampled episodes and one deterministic episode of a `hidden` policy on
/// `plant` on both devices and compares them.
fn compare(plant: &str, hidden: &[u16], normalize: bool, gain: f32, explore: u32) {
    let (mut q_client, mut qemu) = qemu::connect(plant, QemuTiming::FreeRunning);
    let (mut h_client, _board) = sim_client(plant);
    assert_eq!(
        q_client.info().plant,
        h_client.info().plant,
        "plant descriptions"
    );
    let spec = PolicySpec::for_plant(&q_client.info().plant, hidden, normalize);
    let params = Arc::new(params(&spec, 7, gain));
    let (mut q_active, mut h_active) = (None, None);
    let mut steps = 0;
    for (mode, count) in [(RunMode::Explore, explore), (RunMode::Deterministic, 1)] {
        let q = episodes(&mut q_client, &spec, &params, mode, count, &mut q_active);
        let h = episodes(&mut h_client, &spec, &params, mode, count, &mut h_active);
        steps += assert_same(&format!("{plant} {hidden:?} {mode:?}"), &q, &h);
    }
    qemu::assert_running(&mut qemu);
    println!("{plant} {hidden:?}: {steps} steps bit-identical on QEMU and the host");
}

#[test]
fn qube_64_64_with_normaliser() {
    compare("qube", &[64, 64], true, 0.35, 2);
}

#[test]
fn pendulum_70_33_reaches_every_kernel_path() {
    compare("pendulum", &[70, 33], true, 0.4, 6);
}

#[test]
fn cartpole_16_9_categorical() {
    compare("cartpole", &[16, 9], false, 0.8, 12);
}
