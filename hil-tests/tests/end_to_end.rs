//! End to end through the library: the trainer's device driver and learner against the
//! firmware's simulated board, over pseudo-terminals (the host opens the slave path with the
//! serialport crate, exactly as it opens `/dev/ttyACM0`) and over in-memory pipes.
//!
//! - the protocol cycle handshake → upload → episodes → upload of the next policy, checked
//!   on what the device actually runs (its actions change with the policy and come back
//!   bit for bit when an earlier policy returns);
//! - whole training runs whose return improves measurably within a short budget, on
//!   cartpole (over ptys) and pendulum (over pipes).

use std::sync::Arc;
use std::time::Duration;

use tether_firmware::sim::SimHandle;
use tether_hil_tests::runs::{self, board};
use tether_hil_tests::scratch::ScratchDir;
use tether_shared::PolicySpec;
use tether_shared::message::RunMode;
use tether_trainer::device::transport::{self, POLL_INTERVAL};
use tether_trainer::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceLink};
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, DeviceRollout, Recovery};
use tether_trainer::run::LinkKind;
use tether_trainer::trpo::Trpo;
use tether_trainer::trpo::distribution::ActionDistribution;
use tether_trainer::trpo::hyperparams::TrpoConfig;

/// A handshaken pendulum device over a new pty, opened through the trainer's serial
/// transport (serialport crate).
fn pty_device() -> (DeviceClient, SimHandle) {
    let (path, handle) = board("pendulum").spawn_pty().expect("a pty pair");
    let address = DeviceAddress::Serial {
        path: path.to_string_lossy().into_owned(),
        baud: 115_200,
    };
    let stream = transport::open(&address).expect("the pty slave opens like a serial port");
    let client = DeviceClient::connect(
        DeviceLink::new(address.to_string(), stream),
        ClientConfig::default(),
    )
    .expect("handshake over the pty");
    (client, handle)
}

/// A handshaken pendulum device over an in-memory pipe.
fn memory_device() -> (DeviceClient, SimHandle) {
    let (mut host, handle) = board("pendulum").spawn_memory();
    host.set_timeout(POLL_INTERVAL);
    let client = DeviceClient::connect(
        DeviceLink::new("memory", Box::new(host)),
        ClientConfig::default(),
    )
    .expect("handshake over the pipe");
    (client, handle)
}

/// A freshly initialised policy for the device's plant (different seeds, different weights).
fn policy_for(client: &DeviceClient, seed: u64) -> (PolicySpec, Arc<Vec<f32>>) {
    let plant = &client.info().plant;
    let config = TrpoConfig {
        policy_hidden: vec![16, 16],
        value_hidden: vec![16],
        ..TrpoConfig::default()
    };
    let learner = Trpo::new(
        plant.obs_dim as usize,
        ActionDistribution::of_plant(plant),
        config,
        seed,
    )
    .expect("a learner");
    let spec = learner.device_spec().expect("a spec");
    (spec, Arc::new(learner.export_f32()))
}

/// Runs `episodes` deterministic episodes of `policy` as version `version`.
fn run_policy(
    client: &mut DeviceClient,
    active: &mut Option<u32>,
    version: u32,
    policy: &(PolicySpec, Arc<Vec<f32>>),
) -> DeviceRollout {
    let request = CollectRequest {
        version,
        spec: policy.0.clone(),
        params: policy.1.clone(),
        // Same ids and seed every round: the same initial states and noise streams.
        first_episode: 0,
        seed: 42,
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(2),
        silence_timeout: Duration::from_secs(2),
        recovery: Recovery::default(),
    };
    let rollout = collect(client, active, &request).expect("a collection round");
    assert_eq!(
        *active,
        Some(version),
        "the upload of version {version} took"
    );
    assert_eq!(rollout.episodes.len(), 2, "both episodes arrive whole");
    assert_eq!(
        rollout.rejections.discarded_episodes, 0,
        "{:?}",
        rollout.rejections
    );
    assert_eq!(
        rollout.rejections.rejected_frames, 0,
        "a clean link loses no frame"
    );
    for (i, episode) in rollout.episodes.iter().enumerate() {
        assert_eq!(
            episode.policy_version, version,
            "episode {i} ran the new policy"
        );
        assert_eq!(episode.episode, i as u32, "episode ids as requested");
        assert_eq!(
            episode.len(),
            200,
            "pendulum episodes run to the 200-step limit"
        );
        assert!(
            episode.complete_return.is_some(),
            "the episode ended and was summarised"
        );
    }
    rollout
}

fn actions(rollout: &DeviceRollout) -> Vec<u32> {
    rollout
        .episodes
        .iter()
        .flat_map(|e| e.trajectory.records().iter())
        .flat_map(|r| r.action.iter().map(|a| a.to_bits()))
        .collect()
}

/// Handshake, upload of policy A, episodes, upload of B, episodes, upload of A again: the
/// device reports the plant it was built with, tags every episode with the version it ran,
/// acts differently under B, and under A again reproduces A's actions bit for bit (same
/// seed, same initial states) — so each upload really replaced the running policy.
fn upload_cycle(mut client: DeviceClient, handle: SimHandle) {
    let info = client.info().clone();
    assert_eq!(info.plant.name.as_str(), "pendulum");
    assert_eq!(info.plant.obs_dim, 3);
    assert_eq!(info.active_policy, None, "a fresh device runs no policy");

    let a = policy_for(&client, 1);
    let b = policy_for(&client, 2);
    assert_ne!(a.1, b.1);
    let mut active = None;
    let first = run_policy(&mut client, &mut active, 1, &a);
    let second = run_policy(&mut client, &mut active, 2, &b);
    let third = run_policy(&mut client, &mut active, 3, &a);
    assert_ne!(
        actions(&first),
        actions(&second),
        "policy B acts differently from A"
    );
    assert_eq!(
        actions(&first),
        actions(&third),
        "policy A, re-uploaded, acts exactly as before"
    );
    let observations = |r: &DeviceRollout| {
        r.episodes[0]
            .trajectory
            .records()
            .get(0)
            .map(|first| first.observation.to_vec())
    };
    assert_eq!(
        observations(&first),
        observations(&second),
        "the seed fixes the initial state"
    );

    drop(client);
    let report = handle.stop();
    assert_eq!(
        report.episodes, 6,
        "the board ran exactly the six episodes asked for"
    );
    assert_eq!(report.bad_frames, 0, "the device rejected no host frame");
}

#[test]
fn upload_cycle_over_a_pty_opened_like_a_serial_port() {
    let (client, handle) = pty_device();
    assert!(
        client.name().starts_with("/dev/"),
        "named by its path: {}",
        client.name()
    );
    upload_cycle(client, handle);
}

#[test]
fn upload_cycle_over_an_in_memory_pipe() {
    let (client, handle) = memory_device();
    upload_cycle(client, handle);
}

/// Cartpole, 2 devices on ptys, 20 iterations of 1024 steps: a random policy balances for
/// about 20 steps; within the budget the mean of the last two iterations passes 60
/// (measured: 216 with this seed, 250–320 with seeds 1 and 7). Every iteration uses both
/// devices and loses no frame; `metrics.jsonl` holds exactly what the run reported.
#[test]
fn cartpole_learns_over_ptys() {
    let dir = ScratchDir::new("cartpole-pty");
    let config = runs::config("cartpole", 2, LinkKind::Pty, 3, 20 * 1024, 1024);
    let run = runs::train(&dir.join("run"), config, |_| {});
    assert!(run.outcome.finished);
    assert!(
        run.outcome.lost_devices.is_empty(),
        "{:?}",
        run.outcome.lost_devices
    );
    assert_eq!(
        runs::as_json(&run.metrics),
        runs::as_json(&run.seen),
        "metrics.jsonl records every iteration as reported"
    );
    assert_eq!(run.metrics.len(), 20);
    for m in &run.metrics {
        assert_eq!(m.devices_active, 2, "iteration {}", m.iteration);
        assert_eq!(m.rejected_frames, 0, "iteration {}", m.iteration);
        assert_eq!(m.discarded_episodes, 0, "iteration {}", m.iteration);
    }
    let first = run.metrics[0].mean_return;
    let last = runs::mean_return(&run.metrics[run.metrics.len() - 2..]);
    let returns: Vec<f64> = run.metrics.iter().map(|m| m.mean_return.round()).collect();
    assert!(
        first < 40.0,
        "a random cartpole policy falls early: {returns:?}"
    );
    assert!(
        last > 60.0,
        "cartpole should pass 60 within 20k steps: {returns:?}"
    );
}

/// Pendulum, 2 devices on in-memory pipes, 24 iterations of 2048 steps: the mean return of
/// the last 4 iterations is at least 250 above that of the first 4 (measured over seeds 1–4:
/// +470 to +630; single iterations scatter by ±150, hence averages of four). The swing-up
/// itself needs more than this budget; the trend does not.
#[test]
fn pendulum_learns_over_memory_pipes() {
    let dir = ScratchDir::new("pendulum-memory");
    let config = runs::config("pendulum", 2, LinkKind::Memory, 1, 24 * 2048, 2048);
    let run = runs::train(&dir.join("run"), config, |_| {});
    assert!(run.outcome.finished);
    assert_eq!(runs::as_json(&run.metrics), runs::as_json(&run.seen));
    assert_eq!(run.metrics.len(), 24);
    assert!(
        run.metrics
            .iter()
            .all(|m| m.devices_active == 2 && m.rejected_frames == 0)
    );
    let first = runs::mean_return(&run.metrics[..4]);
    let last = runs::mean_return(&run.metrics[20..]);
    let returns: Vec<f64> = run.metrics.iter().map(|m| m.mean_return.round()).collect();
    assert!(
        last > first + 250.0,
        "pendulum return should improve by 250 in 24 iterations: {returns:?}"
    );
}
