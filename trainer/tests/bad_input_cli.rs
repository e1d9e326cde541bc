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

/// A config file with an unknown key: the key and the file are named.
#[test]
fn unknown_config_key() {
    let dir = scratch("unknown");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "plant = \"pendulum\"\ntotal_stepz = 10\n").unwrap();
    assert_clear_failure(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &["total_stepz", "bad.toml"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A config file that is not valid TOML: the file, the line and the problem are named.
#[test]
fn malformed_config() {
    let dir = scratch("malformed");
    let config = dir.join("broken.toml");
    std::fs::write(&config, "plant = \"pendulum\"\n[timeouts\nsilence_s = 2\n").unwrap();
    assert_clear_failure(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &["broken.toml:2:", "unclosed table"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A config value of the wrong type or out of range is named with its key.
#[test]
fn invalid_config_value() {
    let dir = scratch("value");
    let config = dir.join("value.toml");
    std::fs::write(&config, "[timeouts]\nsilence_s = -1.0\n").unwrap();
    assert_clear_failure(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &["timeouts.silence_s"],
    );
    let _ = std::fs::remove_dir_all(dir);
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
