//! Unplug and replug: a device whose serial path vanishes mid-run and comes back.
//!
//! The device is a simulated board on a pseudo-terminal, reached through a symbolic link (as
//! `/dev/serial/by-id/...` reaches a USB board). Mid-run the board is stopped (its pty
//! closes: the host reads an error), the link is removed, and after a while a new board on a
//! new pty appears behind the same link. The host waits for the path within the grace
//! period, handshakes with the new device, uploads the policy again and redoes the round;
//! the run finishes. A path that stays away past the grace period drops the device with an
//! error naming it.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use tether_hil_tests::runs::{board, config, train};
use tether_hil_tests::scratch::ScratchDir;
use tether_trainer::run::{LinkKind, RunConfig, RunFolder};
use tether_trainer::training::Session;
use tether_trainer::trpo::hyperparams::TrpoConfig;

/// A pendulum run of 6000 steps on one real-looking device at `port`, small networks.
fn run_config(port: &Path, grace_s: f64) -> RunConfig<TrpoConfig> {
    let mut config = config("pendulum", 0, LinkKind::Memory, 9, 6_000, 2_000);
    config.devices.ports = vec![port.to_string_lossy().into_owned()];
    config.trpo.policy_hidden = vec![16, 16];
    config.trpo.value_hidden = vec![16, 16];
    config.timeouts.replug_grace_s = grace_s;
    config
}

/// Points `link` at `target`, replacing whatever it pointed at.
fn point(link: &Path, target: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("a symbolic link");
}

#[test]
fn a_device_that_comes_back_behind_the_same_path_is_reconnected_and_the_run_goes_on() {
    let dir = ScratchDir::new("replug");
    let link = dir.join("ttyTETHER");
    let (first_path, first) = board("pendulum").spawn_pty().expect("a pty");
    point(&link, &first_path);

    // After the first iteration: unplug (the board goes, and its path), wait, plug a new
    // board in behind the same path.
    let (unplug, unplugged) = mpsc::channel::<()>();
    let replug_link = link.clone();
    let replugger = std::thread::spawn(move || {
        unplugged.recv().expect("the first iteration ends");
        first.stop();
        std::fs::remove_file(&replug_link).expect("the link goes");
        std::thread::sleep(Duration::from_millis(600));
        let (second_path, second) = board("pendulum").spawn_pty().expect("a pty");
        point(&replug_link, &second_path);
        second
    });
    let mut unplug = Some(unplug);
    let run = train(&dir.join("run"), run_config(&link, 10.0), |m| {
        if m.iteration == 0
            && let Some(tx) = unplug.take()
        {
            let _ = tx.send(());
        }
    });
    let second = replugger.join().expect("the replug thread");
    assert!(run.outcome.finished);
    assert_eq!(run.outcome.progress.env_steps, 6_000);
    assert!(
        run.outcome.lost_devices.is_empty(),
        "{:?}",
        run.outcome.lost_devices
    );
    let reconnects: u64 = run.metrics.iter().map(|m| m.reconnects).sum();
    assert!(reconnects >= 1, "{:?}", run.metrics);
    assert_eq!(run.metrics.len(), 3, "every iteration, none twice");
    second.stop();
}

#[test]
fn a_path_that_stays_away_past_the_grace_period_drops_the_device_naming_it() {
    let dir = ScratchDir::new("unplug");
    let link = dir.join("ttyGONE");
    let (path, device) = board("pendulum").spawn_pty().expect("a pty");
    point(&link, &path);
    let folder = RunFolder::create(&dir.join("run")).expect("a run folder");
    let mut session = Session::start(folder, run_config(&link, 0.5)).expect("the session starts");
    device.stop();
    std::fs::remove_file(&link).expect("the link goes");
    let started = std::time::Instant::now();
    let err = session
        .run(&std::sync::atomic::AtomicBool::new(false), |_| {})
        .expect_err("no device comes back");
    let message = err.to_string();
    assert!(message.contains("every device was lost"), "{message}");
    assert!(message.contains("ttyGONE"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
