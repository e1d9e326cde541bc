//! A rig behind TCP: the simulated device's pseudo-terminal served by a real ser2net (Debian
//! package, installed by `scripts/setup.sh`), and the trainer reaching it through
//! `--tcp 127.0.0.1:PORT` (`devices.tcp`), as it would a rig on another machine.
//!
//! ser2net 4.x serves a pty as it serves any tty (it opens the slave path, sets raw 8N1 and
//! copies bytes unchanged), so no socat fallback is used. A missing ser2net fails the test
//! with a message that says to run `scripts/setup.sh`.

use tether_hil_tests::runs::{self, board};
use tether_hil_tests::scratch::ScratchDir;
use tether_hil_tests::ser2net::Ser2net;
use tether_trainer::run::LinkKind;

/// Three iterations of pendulum training through ser2net: every iteration gets its steps
/// from the one TCP device, no frame is lost or rejected on the way, and the board behind
/// ser2net ran every step the trainer learned from.
#[test]
fn trains_through_ser2net_over_tcp() {
    let (pty, board) = board("pendulum").spawn_pty().expect("a pty pair");
    let mut server = Ser2net::serve(&pty).unwrap_or_else(|e| panic!("{e}"));
    let dir = ScratchDir::new("tcp");
    let mut config = runs::config("pendulum", 0, LinkKind::Memory, 4, 3 * 1024, 1024);
    config.devices.tcp = vec![server.endpoint()];
    let run = runs::train(&dir.join("run"), config, |_| {});

    assert!(run.outcome.finished);
    assert!(
        run.outcome.lost_devices.is_empty(),
        "{:?}",
        run.outcome.lost_devices
    );
    assert_eq!(run.metrics.len(), 3, "three iterations of 1024 steps");
    for m in &run.metrics {
        assert_eq!(m.devices_active, 1, "iteration {}", m.iteration);
        assert_eq!(
            m.rejected_frames, 0,
            "iteration {}: ser2net must pass bytes unchanged",
            m.iteration
        );
        assert_eq!(m.discarded_episodes, 0, "iteration {}", m.iteration);
        assert!(
            m.mean_return.is_finite(),
            "iteration {} has complete episodes",
            m.iteration
        );
    }
    assert_eq!(run.outcome.progress.env_steps, 3 * 1024);
    assert!(
        server.is_running(),
        "ser2net is still serving: {}",
        server.log()
    );
    drop(server);
    let report = board.stop();
    assert!(
        report.steps >= 3 * 1024,
        "the board behind ser2net ran the steps: {report:?}"
    );
    assert_eq!(
        report.bad_frames, 0,
        "the device rejected no host frame: {report:?}"
    );
}
