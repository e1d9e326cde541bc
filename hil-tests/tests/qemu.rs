//! The firmware on the real instruction set: its Cortex-M4F board image in QEMU as a device.
//!
//! - Training on QEMU devices is bit-identical to training on the host build: the same f32
//!   operations (no fused multiply-add), the same libm, the FPU's IEEE defaults.
//! - In real-time mode the board's SysTick paces the control loop at the plant's rate; under
//!   `-icount` the device's own step times count emulated instructions, so they do not
//!   depend on the host's load.
//!
//! Bad input sent to a QEMU device is in `bad_input.rs`; the images come from
//! `scripts/cross.sh` (`scripts/test.sh` runs it first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_hil_tests::qemu;
use tether_hil_tests::runs;
use tether_hil_tests::scratch::ScratchDir;
use tether_shared::PolicySpec;
use tether_shared::message::RunMode;
use tether_trainer::device::qemu::{BoardLine, QemuError, QemuExtras, QemuTiming};
use tether_trainer::rollout::collect::collect;
use tether_trainer::rollout::{CollectRequest, Recovery};
use tether_trainer::run::LinkKind;

/// Pendulum on two QEMU devices, 10 iterations of 512 steps, against the same run on two
/// host-built devices over in-memory pipes: byte-identical `policy.bin`, and identical
/// metrics apart from timing.
#[test]
fn training_on_qemu_devices_is_bit_identical_to_the_host_build() {
    let dir = ScratchDir::new("qemu-bit-exact");
    let run = |link: LinkKind, name: &str| {
        let config = runs::config("pendulum", 2, link, 11, 10 * 512, 512);
        let started = Instant::now();
        let finished = runs::train(&dir.join(name), config, |_| {});
        eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
        assert!(finished.outcome.finished);
        assert_eq!(finished.metrics.len(), 10);
        for m in &finished.metrics {
            assert_eq!(
                (m.devices_active, m.rejected_frames, m.discarded_episodes),
                (2, 0, 0),
                "{name} iteration {}",
                m.iteration
            );
        }
        let policy = std::fs::read(dir.join(name).join("policy.bin")).expect("policy.bin");
        (policy, finished.metrics)
    };
    let _image = qemu::image("pendulum"); // fail naming scripts/cross.sh, not in the fleet
    let (on_qemu, qemu_metrics) = run(LinkKind::Qemu, "qemu");
    let (in_memory, memory_metrics) = run(LinkKind::Memory, "memory");
    let learning = |metrics: &[tether_trainer::run::IterationMetrics]| {
        metrics
            .iter()
            .map(|m| (m.env_steps, m.mean_return.to_bits(), m.kl.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(learning(&qemu_metrics), learning(&memory_metrics));
    assert!(
        on_qemu == in_memory,
        "policy.bin differs between --link qemu and --link memory"
    );
}

/// The qube's [64, 64] policy with its observation normaliser: zero means, unit scales,
/// small weights (so the deterministic policy barely moves the arm and every episode runs
/// to its time limit), zero log-std.
fn quiet_qube_policy(spec: &PolicySpec) -> Vec<f32> {
    let obs = spec.obs_dim as usize;
    let network = spec.normalizer_len()..spec.normalizer_len() + spec.network_len();
    (0..spec.param_count())
        .map(|i| match i {
            i if i < obs => 0.0,
            i if i < 2 * obs => 1.0,
            i if network.contains(&i) => 0.002 * ((i % 11) as f32 - 5.0),
            _ => 0.0,
        })
        .collect()
}

/// One qube episode (1250 steps at 250 Hz) in real-time mode under `-icount`: the device
/// reports no missed deadline and a worst control step below the 4 ms period, and the
/// episode takes the plant's time in wall time (QEMU never runs ahead of the host's clock).
#[test]
fn qube_keeps_its_250_hz_in_real_time_under_icount() {
    let (mut client, mut device) = qemu::connect("qube", QemuTiming::RealTime);
    let plant = client.info().plant.clone();
    assert_eq!(plant.control_rate_hz, 250.0);
    let spec = PolicySpec::for_plant(&plant, &[64, 64], true);
    let request = CollectRequest {
        version: 1,
        spec: spec.clone(),
        params: Arc::new(quiet_qube_policy(&spec)),
        first_episode: 0,
        seed: 5,
        mode: RunMode::Deterministic,
        steps: None,
        episodes: Some(1),
        silence_timeout: Duration::from_secs(5),
        recovery: Recovery::default(),
    };
    // QEMU's clock alignment lets an emulation that fell behind the host's clock (it does
    // at start) run flat out until it has caught up, so the first episode's wall time says
    // little about pacing: time the second one.
    let warm_up = collect(&mut client, &mut None, &request).expect("a warm-up episode");
    assert_eq!(warm_up.episodes.len(), 1, "{:?}", warm_up.rejections);
    let request = CollectRequest {
        first_episode: 1,
        ..request
    };
    let started = Instant::now();
    let rollout = collect(&mut client, &mut None, &request).expect("one episode");
    let wall = started.elapsed();
    qemu::assert_running(&mut device);
    assert_eq!(rollout.episodes.len(), 1, "{:?}", rollout.rejections);
    let episode = &rollout.episodes[0];
    let period_us = (1e6 / plant.control_rate_hz) as u32;
    eprintln!(
        "qube in QEMU, real time: {} steps in {:.2} s wall, worst step {} µs of {period_us}, \
         {} missed deadlines",
        episode.len(),
        wall.as_secs_f64(),
        episode.worst_step_us,
        episode.missed_deadlines
    );
    assert!(episode.len() >= 1000, "{} steps", episode.len());
    assert_eq!(episode.missed_deadlines, 0);
    assert!(
        episode.worst_step_us > 0 && episode.worst_step_us < period_us,
        "worst step {} µs against a {period_us} µs period",
        episode.worst_step_us
    );
    let plant_time = episode.len() as f64 / f64::from(plant.control_rate_hz);
    assert!(
        wall.as_secs_f64() > 0.9 * plant_time,
        "{} steps took {wall:?}: not paced at {} Hz",
        episode.len(),
        plant.control_rate_hz
    );
}

/// A word the board does not know on its semihosting command line stops it at once with a
/// failure status and a message naming the word and the words it knows (rather than serving
/// in a mode nobody asked for): the start fails with the board's words.
#[test]
fn an_unknown_board_word_stops_the_board_naming_it() {
    let extras = QemuExtras {
        board_words: &["turbo"],
        ..QemuExtras::default()
    };
    let started = qemu::start("pendulum", QemuTiming::FreeRunning, extras);
    let Err(QemuError::Failed { why, output, .. }) = started else {
        panic!("the board served with an unknown word");
    };
    assert!(why.contains("exited with exit status: 1"), "{why}");
    let expected = BoardLine::Fatal(
        "bad command line (UnknownWord(\"turbo\")); words: free, realtime, bench, deploy, episodes=N, seed=S, eval-seed=S, bench-gsde"
            .into(),
    );
    assert!(
        output
            .iter()
            .any(|line| BoardLine::parse(line).as_ref() == Some(&expected)),
        "{output:?}"
    );
}
