//! Crash and resume with the real binary: `tether train` killed with SIGKILL in the middle
//! of a run, then `tether resume`, ends exactly where a straight run with the same seed
//! ends; and `tether resume` refuses a truncated checkpoint with a clear error.
//!
//! (Truncation at every byte offset is checked through the library in
//! `hil-tests/tests/crash_resume.rs`; here a few offsets go through the binary.)

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ChildGuard, Scratch, one_line_error, run, stderr, tether};

const ITERATIONS: usize = 12;
const STEPS_PER_ITERATION: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(180);

/// A 12-iteration pendulum run on 2 simulated devices with a fixed seed.
fn write_config(dir: &Scratch) -> std::path::PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "plant = \"pendulum\"\nseed = 11\ntotal_steps = {}\n[devices]\nsim = 2\n[trpo]\nsteps_per_iteration = {STEPS_PER_ITERATION}\n",
            ITERATIONS * STEPS_PER_ITERATION
        ),
    )
    .unwrap();
    path
}

/// `metrics.jsonl` as JSON values without the wall-clock fields, which differ between runs.
fn metrics_without_timing(run_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let object = value.as_object_mut().expect("an object");
            assert!(object.remove("wall_s").is_some() && object.remove("update_s").is_some());
            value
        })
        .collect()
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.matches('\n').count())
}

/// Straight run vs. run killed with SIGKILL once `metrics.jsonl` has 2 lines, then resumed:
/// identical `policy.bin` bytes and identical metrics for every iteration (timing aside),
/// each iteration present exactly once, in order.
#[test]
fn sigkill_then_resume_matches_a_straight_run() {
    let dir = Scratch::new("crash");
    let config = write_config(&dir);
    let straight = dir.join("straight");
    let output = run(
        tether()
            .arg("train")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&straight),
        TIMEOUT,
    );
    assert!(output.status.success(), "straight run: {}", stderr(&output));

    let crashed = dir.join("crashed");
    let child = tether()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&crashed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether train");
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + TIMEOUT;
    let metrics_path = crashed.join("metrics.jsonl");
    while complete_lines(&metrics_path) < 2 {
        let child = guard.0.as_mut().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "train ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "no 2 metrics lines within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut child = guard.0.take().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "train still running when killed"
    );
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let at_kill = complete_lines(&metrics_path);
    assert!(
        at_kill < ITERATIONS,
        "killed in the middle, after {at_kill} iterations"
    );

    let output = run(tether().arg("resume").arg(&crashed), TIMEOUT);
    let text = stderr(&output);
    assert!(output.status.success(), "resume: {text}");
    assert!(text.contains("resuming"), "{text}");

    let a = std::fs::read(straight.join("policy.bin")).unwrap();
    let b = std::fs::read(crashed.join("policy.bin")).unwrap();
    assert!(
        a == b,
        "policy.bin differs between the straight and the resumed run"
    );
    let straight_metrics = metrics_without_timing(&straight);
    let resumed_metrics = metrics_without_timing(&crashed);
    let iterations: Vec<u64> = resumed_metrics
        .iter()
        .map(|m| m["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(
        iterations,
        (0..ITERATIONS as u64).collect::<Vec<_>>(),
        "no iteration lost or repeated"
    );
    assert_eq!(straight_metrics.len(), ITERATIONS);
    for (s, r) in straight_metrics.iter().zip(&resumed_metrics) {
        assert_eq!(s, r, "iteration {} differs", s["iteration"]);
    }
}

/// `tether resume` on a run whose checkpoint was cut short (inside the magic, inside the
/// header, mid-payload, one byte short) fails with one line naming the checkpoint, and
/// leaves the run's metrics as they were.
#[test]
fn resume_refuses_a_truncated_checkpoint() {
    let dir = Scratch::new("truncated");
    let out = dir.join("run");
    let output = run(
        tether()
            .args([
                "train", "--plant", "pendulum", "--sim", "1", "--steps", "512", "--out",
            ])
            .arg(&out),
        TIMEOUT,
    );
    assert!(output.status.success(), "train: {}", stderr(&output));
    let checkpoint = out.join("checkpoint.bin");
    let intact = std::fs::read(&checkpoint).unwrap();
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    for cut in [0, 5, 17, intact.len() / 2, intact.len() - 1] {
        std::fs::write(&checkpoint, &intact[..cut]).unwrap();
        let output = run(tether().arg("resume").arg(&out), TIMEOUT);
        let line = one_line_error(&output);
        assert!(
            line.contains(&checkpoint.display().to_string()),
            "cut at {cut}: {line}"
        );
        assert!(line.contains("truncated"), "cut at {cut}: {line}");
        assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
    }
}
