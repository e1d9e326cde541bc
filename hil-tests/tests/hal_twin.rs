//! The firmware's real rotary plant (`RotaryPendulum` over embedded-hal) inside the real
//! `Device`, against the HAL-level twin of the qube model (`tether_hil_tests::hal_twin`):
//!
//! - its episodes follow the qube model plant's from the same start, within the
//!   quantisation (encoders, 1/10 000 duty steps);
//! - a 300 000-step training run through it learns as the model plant does on the same
//!   budget.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tether_firmware::DeviceConfig;
use tether_firmware::plant::Plant;
use tether_firmware::plant::qube::Qube;
use tether_firmware::plant::rotary_hal::RotaryConfig;
use tether_firmware::sim::{SimBoard, SimClock, SimConfig, SimHandle};
use tether_hil_tests::hal_twin::{QubeFrom, Twin};
use tether_hil_tests::runs;
use tether_hil_tests::scratch::ScratchDir;
use tether_shared::PolicySpec;
use tether_shared::message::RunMode;
use tether_trainer::device::simulated::SimDevice;
use tether_trainer::device::transport::POLL_INTERVAL;
use tether_trainer::device::{ClientConfig, DeviceClient, DeviceLink};
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, DeviceRollout, Recovery};
use tether_trainer::run::{LinkKind, RunFolder};
use tether_trainer::training::{Fleet, Session};
use tether_trainer::trpo::Trpo;
use tether_trainer::trpo::distribution::ActionDistribution;
use tether_trainer::trpo::hyperparams::TrpoConfig;

/// Virtual time, no watchdog: as the trainer's own simulated devices.
fn sim_config() -> SimConfig {
    SimConfig {
        device: DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        },
        ..SimConfig::default()
    }
}

fn connect(name: &str, board: SimBoard<impl Plant + Send + 'static>) -> (DeviceClient, SimHandle) {
    let (mut host, handle) = board.spawn_memory();
    host.set_timeout(POLL_INTERVAL);
    let client = DeviceClient::connect(
        DeviceLink::new(name, Box::new(host)),
        ClientConfig::default(),
    )
    .expect("handshake");
    (client, handle)
}

/// A twin device at rest hanging straight down.
fn twin_device(name: &str) -> (DeviceClient, SimHandle, Twin) {
    let clock = SimClock::new_virtual();
    let twin = Twin::new(clock.clone());
    let board =
        SimBoard::new(twin.plant(RotaryConfig::qube_class()), sim_config()).with_clock(clock);
    let (client, handle) = connect(name, board);
    (client, handle, twin)
}

/// A [64, 64] policy whose deterministic mean swings the arm about: the learner's initial
/// network with its output layer scaled up (an untrained network barely moves the rig).
fn lively_policy(plant: &tether_shared::PlantDescription) -> (PolicySpec, Arc<Vec<f32>>) {
    let learner = Trpo::new(
        6,
        ActionDistribution::of_plant(plant),
        TrpoConfig::default(),
        7,
    )
    .expect("a learner");
    let spec = learner.device_spec().expect("a spec");
    let mut params = learner.export_f32();
    // The last layer's weights and bias sit before the log-std at the end of the layout.
    let n = params.len();
    for p in &mut params[n - 1 - 65..n - 1] {
        *p *= 400.0;
    }
    (spec, Arc::new(params))
}

fn one_episode(client: &mut DeviceClient, policy: &(PolicySpec, Arc<Vec<f32>>)) -> DeviceRollout {
    let mut active = None;
    let request = CollectRequest {
        version: 1,
        spec: policy.0.clone(),
        params: policy.1.clone(),
        first_episode: 0,
        seed: 3,
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(1),
        silence_timeout: Duration::from_secs(5),
        recovery: Recovery::default(),
    };
    collect(client, &mut active, &request).expect("an episode")
}

/// From rest hanging down, a deterministic episode through the twin and through the model
/// plant started in the twin's state: observations within a count per angle and the
/// velocity filter's matching tolerance, actions likewise, for the first second; returns
/// within the one-step reward shift of a real plant (module docs of `rotary_hal`).
#[test]
fn twin_episodes_follow_the_model_within_quantisation() {
    let (mut twin_client, twin_handle, twin) = twin_device("twin");
    let plant = twin_client.info().plant.clone();
    assert_eq!(
        plant,
        Qube::new().description(),
        "the rig reports the qube's description"
    );
    let policy = lively_policy(&plant);
    let twin_rollout = one_episode(&mut twin_client, &policy);
    drop(twin_handle);
    let _ = twin;

    let model = QubeFrom {
        model: Qube::new(),
        start: [0.0, std::f32::consts::PI, 0.0, 0.0],
    };
    let (mut model_client, _model_handle) = connect("model", SimBoard::new(model, sim_config()));
    let model_rollout = one_episode(&mut model_client, &policy);

    let (t, m) = (
        &twin_rollout.episodes[0].trajectory,
        &model_rollout.episodes[0].trajectory,
    );
    let (tr, mr) = (t.records(), m.records());
    let compared = tr.len().min(mr.len()).min(250);
    assert!(
        compared >= 100,
        "episodes long enough to compare: {} and {}",
        tr.len(),
        mr.len()
    );
    let count = tether_firmware::plant::qube::COUNT_RAD;
    let mut moved = 0.0f32;
    for (k, (a, b)) in tr.iter().zip(mr.iter()).take(compared).enumerate() {
        for i in 0..4 {
            // sin/cos of angles one count apart differ by at most one count.
            assert!(
                (a.observation[i] - b.observation[i]).abs() <= 1.5 * count,
                "step {k} obs[{i}]: {:?} vs {:?}",
                a.observation,
                b.observation
            );
        }
        for i in 4..6 {
            // A count of difference in a period is 0.77 rad/s raw, 0.42 after the filter.
            assert!(
                (a.observation[i] - b.observation[i]).abs() <= 0.8,
                "step {k} obs[{i}]: {:?} vs {:?}",
                a.observation,
                b.observation
            );
        }
        assert!(
            (a.action[0] - b.action[0]).abs() <= 0.5,
            "step {k}: {} vs {}",
            a.action[0],
            b.action[0]
        );
        moved = moved.max(a.observation[4].abs());
    }
    assert!(
        moved > 1.0,
        "the policy moved the arm (max {moved} rad/s): the comparison means something"
    );
    let (rt, rm): (f32, f32) = (
        tr.iter().map(|r| r.reward).sum(),
        mr.iter().map(|r| r.reward).sum(),
    );
    eprintln!(
        "twin return {rt:.3} over {} steps, model {rm:.3} over {} steps",
        tr.len(),
        mr.len()
    );
    assert!(
        (rt - rm).abs() <= 0.05 * rm.abs() + 2.0,
        "returns {rt} vs {rm}"
    );
}

/// 300 000 steps of the qube preset through two twin devices and through two model
/// devices, same seed: both learn (the last iterations' mean return well above the first
/// ones'), and the twin reaches a return of at least 300.
#[test]
fn training_through_the_twin_learns_like_the_model() {
    const STEPS: u64 = 300_000;
    let scratch = ScratchDir::new("hal-twin");
    let model = runs::train(
        &scratch.path().join("model"),
        runs::config("qube", 2, LinkKind::Memory, 1, STEPS, 10_000),
        |_| {},
    );

    let mut clients = Vec::new();
    let mut boards = Vec::new();
    for i in 0..2 {
        let (client, handle, _twin) = twin_device(&format!("twin{i}"));
        clients.push(client);
        boards.push(SimDevice::Host(handle));
    }
    let plant = clients[0].info().plant.clone();
    let fleet = Fleet {
        clients,
        plant,
        boards,
    };
    let folder = RunFolder::create(&scratch.path().join("twin")).expect("a run folder");
    let mut config = runs::config("qube", 2, LinkKind::Memory, 1, STEPS, 10_000);
    config.timeouts.silence_s = 5.0;
    let mut session = Session::start_with_fleet(folder, config, fleet).expect("the session starts");
    let mut twin = Vec::new();
    session
        .run(&AtomicBool::new(false), |m| twin.push(m.clone()))
        .expect("the twin run finishes");

    let early_late = |metrics: &[tether_trainer::run::IterationMetrics]| {
        let n = metrics.len();
        (
            runs::mean_return(&metrics[..3]),
            runs::mean_return(&metrics[n - 3..]),
        )
    };
    let (model_early, model_late) = early_late(&model.metrics);
    let (twin_early, twin_late) = early_late(&twin);
    eprintln!("model {model_early:.1} -> {model_late:.1}, twin {twin_early:.1} -> {twin_late:.1}");
    assert!(
        model_late > model_early + 50.0,
        "the model plant learns: {model_early} -> {model_late}"
    );
    assert!(
        twin_late > twin_early + 50.0,
        "the twin learns: {twin_early} -> {twin_late}"
    );
    assert!(twin_late >= 300.0, "the twin reaches 300: {twin_late}");
}
