//! Bad input through the `tether` binary: each case is one clear error on stderr and a
//! non-zero exit, quickly (no hang, no retry loop).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tether(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .output()
        .expect("the tether binary runs");
    (out, started.elapsed())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Fails, with `needles` all in stderr, in under 10 s.
fn assert_clear_failure(args: &[&str], needles: &[&str]) {
    let (out, took) = tether(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` not in: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// A serial port that does not exist: named, with the hint to list the ports.
#[test]
fn missing_port() {
    let dir = scratch("port");
    let out = dir.join("run");
    assert_clear_failure(
        &[
            "train",
            "--port",
            "/dev/tether-no-such-port",
            "--out",
            out.to_str().unwrap(),
        ],
        &["/dev/tether-no-such-port", "does not exist", "tether ports"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes `contents` to a config file named `file` and checks that `tether train --config`
/// fails clearly, naming every string of `expected`.
fn config_fails_clearly(name: &str, file: &str, contents: &str, expected: &[&str]) {
    let dir = scratch(name);
    let config = dir.join(file);
    std::fs::write(&config, contents).unwrap();
    assert_clear_failure(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        expected,
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A config file with an unknown key: the key and the file are named.
#[test]
fn unknown_config_key() {
    config_fails_clearly(
        "unknown",
        "bad.toml",
        "plant = \"pendulum\"\ntotal_stepz = 10\n",
        &["total_stepz", "bad.toml"],
    );
}

/// A config file that is not valid TOML: the file, the line and the problem are named.
#[test]
fn malformed_config() {
    config_fails_clearly(
        "malformed",
        "broken.toml",
        "plant = \"pendulum\"\n[timeouts\nsilence_s = 2\n",
        &["broken.toml:2:", "unclosed table"],
    );
}

/// A config value of the wrong type or out of range is named with its key.
#[test]
fn invalid_config_value() {
    config_fails_clearly(
        "value",
        "value.toml",
        "[timeouts]\nsilence_s = -1.0\n",
        &["timeouts.silence_s"],
    );
}

/// A malformed fault spec on the command line names the bad item.
#[test]
fn malformed_fault_spec() {
    let dir = scratch("faults");
    assert_clear_failure(
        &[
            "train",
            "--faults",
            "corupt=0.1",
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &["corupt=0.1", "unknown fault"],
    );
    let _ = std::fs::remove_dir_all(dir);
}
