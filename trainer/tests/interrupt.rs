//! Ctrl-C during `tether train`: the run finishes its iteration, checkpoints, stops the
//! devices and exits non-zero with a one-line summary and the command that continues it.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails half-way.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn metrics_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn sigint_checkpoints_and_exits_nonzero_with_a_summary() {
    let dir = std::env::temp_dir().join(format!("tether-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "train",
            "--plant",
            "pendulum",
            "--steps",
            "100000000",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether starts");
    let mut child = Reap(Some(child));

    // Wait for two iterations to be on disk, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metrics_lines(&dir) < 2 {
        assert!(Instant::now() < deadline, "no progress within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.0.as_ref().map(|c| c.id()).expect("child");
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());

    let mut process = child.0.take().expect("child");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = process.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tether did not stop within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    process
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");

    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("interrupted:"),
        "one-line summary expected:\n{stderr}"
    );
    assert!(
        stderr.contains("tether resume"),
        "resume hint expected:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The iteration in progress was finished and checkpointed: metrics and checkpoint agree.
    let lines = metrics_lines(&dir);
    assert!(lines >= 2);
    assert!(dir.join("checkpoint.bin").is_file());
    assert!(dir.join("policy.bin").is_file());

    // The checkpoint is usable: resume runs one more iteration with a budget just above.
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value =
        serde_json::from_str(metrics.lines().last().expect("a line")).expect("json");
    let steps = last["env_steps"].as_u64().expect("env_steps");
    let resumed = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("resume")
        .arg(&dir)
        .args(["--steps", &(steps + 1).to_string()])
        .output()
        .expect("resume runs");
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(metrics_lines(&dir), lines + 1, "exactly one more iteration");
    let _ = std::fs::remove_dir_all(&dir);
}
