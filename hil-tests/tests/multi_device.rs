//! Several devices at once, one of which dies in the middle of a collection round: training
//! goes on with the others to the end of its budget, `metrics.jsonl` shows the device count
//! dropping, and the session outcome names the lost device.

use tether_hil_tests::kill_switch::spawn_pty_with_kill_switch;
use tether_hil_tests::runs::{self, board};
use tether_hil_tests::scratch::ScratchDir;
use tether_trainer::run::LinkKind;

const DEVICES: usize = 4;
const VICTIM: usize = 2;
const ITERATIONS: u64 = 5;
const STEPS_PER_ITERATION: usize = 1024;

/// Four simulated pendulum devices on ptys (opened by path, as serial ports); device 2 loses
/// its port 1500 bytes into its second round (mid-stream: a round sends ~6 KB). Iteration 0
/// has 4 devices, every later one 3; exactly the victim's share of that round is lost and
/// the budget is still met; the outcome lists exactly the killed device, by its port path.
#[test]
fn one_device_killed_mid_round_the_others_finish() {
    let mut boards = Vec::new();
    let mut paths = Vec::new();
    let mut switches = Vec::new();
    for _ in 0..DEVICES {
        let (path, handle, switch) =
            spawn_pty_with_kill_switch(board("pendulum")).expect("a pty pair");
        paths.push(path.to_string_lossy().into_owned());
        boards.push(handle);
        switches.push(switch);
    }
    let dir = ScratchDir::new("multi");
    let total = ITERATIONS * STEPS_PER_ITERATION as u64;
    let mut config = runs::config(
        "pendulum",
        0,
        LinkKind::Memory,
        9,
        total,
        STEPS_PER_ITERATION,
    );
    config.devices.ports = paths.clone();
    let victim = switches[VICTIM].clone();
    let run = runs::train(&dir.join("run"), config, |m| {
        if m.iteration == 0 {
            victim.arm_after(1500);
        }
    });

    assert!(switches[VICTIM].killed(), "the kill switch fired");
    assert!(
        run.outcome.finished,
        "training finished on the other devices"
    );
    assert!(run.outcome.progress.env_steps >= total);
    let active: Vec<u32> = run.metrics.iter().map(|m| m.devices_active).collect();
    assert_eq!(active[0], DEVICES as u32, "{active:?}");
    assert!(
        active[1..].iter().all(|&n| n == DEVICES as u32 - 1),
        "the device count drops in the round the device died and stays down: {active:?}"
    );
    let iterations: Vec<u64> = run.metrics.iter().map(|m| m.iteration).collect();
    assert_eq!(
        iterations,
        (0..iterations.len() as u64).collect::<Vec<_>>(),
        "every iteration recorded once, in order"
    );
    // Shares are fixed when a round starts: in the round the victim died in, the three
    // others delivered their 256 steps and its share was lost; later rounds split the
    // whole budget over three. The budget is met with one extra iteration.
    let steps: Vec<u64> = run
        .metrics
        .iter()
        .scan(0, |before, m| {
            let delta = m.env_steps - *before;
            *before = m.env_steps;
            Some(delta)
        })
        .collect();
    let share = (STEPS_PER_ITERATION / DEVICES) as u64;
    assert_eq!(steps[0], STEPS_PER_ITERATION as u64, "{steps:?}");
    assert_eq!(steps[1], share * (DEVICES as u64 - 1), "{steps:?}");
    assert!(
        steps[2..].iter().all(|&s| s == STEPS_PER_ITERATION as u64),
        "{steps:?}"
    );
    assert_eq!(run.metrics.len() as u64, ITERATIONS + 1, "{steps:?}");
    let lost = &run.outcome.lost_devices;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        lost[0].0, paths[VICTIM],
        "the lost device is named by its port: {lost:?}"
    );
    assert!(
        lost[0].1.contains(&paths[VICTIM]),
        "with a reason naming it: {lost:?}"
    );
    eprintln!("lost device reported as: {} — {}", lost[0].0, lost[0].1);
    for (i, s) in switches.iter().enumerate() {
        if i != VICTIM {
            assert!(!s.killed());
            assert!(s.bytes_sent() > 0);
        }
    }
}
