//! Crash and resume with the real binary: `tether train` killed with SIGKILL in the middle
//! of a run, then `tether resume`, ends exactly where a straight run with the same seed
//! ends; and `tether resume` refuses a truncated checkpoint with a clear error.
//!
//! (Truncation at every byte offset is checked through the library in
//! `hil-tests/tests/crash_resume.rs`; here a few offsets go through the binary.)

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ChildGuard, Scratch, one_line_error, run, stderr, tether};

const ITERATIONS: usize = 12;
const STEPS_PER_ITERATION: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(180);

/// A 12-iteration pendulum run on 2 simulated devices with a fixed seed, evaluated after
/// every iteration, its best policy the mean of the 3 best (so a kill can also fall between
/// a candidate's file and the checkpoint, or before the dropped candidates are pruned).
fn write_config(dir: &Scratch) -> std::path::PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "plant = \"pendulum\"\nseed = 11\ntotal_steps = {}\nsteps_per_iteration = {STEPS_PER_ITERATION}\n[devices]\nsim = 2\n\
             [evaluation]\nevery = 1\nepisodes = 2\naverage_best = 3\n",
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
            for timing in [
                "wall_s",
                "update_s",
                "update_gradient_s",
                "update_cg_s",
                "update_line_search_s",
                "value_fit_s",
                "steps_per_s",
            ] {
                assert!(object.remove(timing).is_some(), "{timing} in {line}");
            }
            value
        })
        .collect()
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.matches('\n').count())
}

/// Inode of the checkpoint (a new one per save: it is written by rename).
fn checkpoint_inode(run_dir: &Path) -> Option<u64> {
    std::fs::metadata(run_dir.join("checkpoint.bin"))
        .ok()
        .map(|m| m.ino())
}

/// Spawns `tether <args>` with stderr into `log`.
fn spawn(args: &[&std::ffi::OsStr], log: &Path) -> ChildGuard {
    let child = tether()
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("stderr log"))
        .spawn()
        .expect("spawn tether");
    ChildGuard(Some(child))
}

/// Waits until `metrics.jsonl` has `lines` lines (and, with `after_checkpoint`, until the
/// checkpoint has been rewritten since), then SIGKILLs the child. Returns the metrics line
/// count at the kill.
fn kill_after(
    mut guard: ChildGuard,
    run_dir: &Path,
    lines: usize,
    after_checkpoint: bool,
) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let metrics = run_dir.join("metrics.jsonl");
    let mut seen_inode = None;
    loop {
        let child = guard.0.as_mut().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "tether ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "no {lines} metrics lines within {TIMEOUT:?}"
        );
        if complete_lines(&metrics) >= lines {
            if !after_checkpoint {
                break;
            }
            let inode = checkpoint_inode(run_dir);
            match seen_inode {
                None => seen_inode = Some(inode),
                Some(seen) if seen != inode => break,
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut child = guard.0.take().unwrap();
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let at_kill = complete_lines(&metrics);
    assert!(
        at_kill < ITERATIONS,
        "killed in the middle, after {at_kill} iterations"
    );
    at_kill
}

/// The iteration a `tether resume` banner says it resumes at.
fn resumed_at(log: &str) -> usize {
    log.split(" at iteration ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the banner names the iteration: {log}"))
}

/// Straight run vs. a run SIGKILLed twice and resumed twice: once right after its second
/// metrics line (typically before that iteration's checkpoint: resume must drop the line
/// and redo the iteration), once after a checkpoint was rewritten past the sixth line
/// (typically mid-collection: resume continues from that checkpoint). The end: identical
/// `policy.bin` and `best_policy.bin` bytes, the same candidate files, and identical
/// metrics for every iteration (timing aside), each iteration present exactly once, in
/// order.
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
    let log = dir.join("stderr.log");
    let train: [&std::ffi::OsStr; 5] = [
        "train".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        crashed.as_os_str(),
    ];
    let first_kill = kill_after(spawn(&train, &log), &crashed, 2, false);
    let resume: [&std::ffi::OsStr; 2] = ["resume".as_ref(), crashed.as_os_str()];
    let second_kill = kill_after(spawn(&resume, &log), &crashed, 6, true);
    let first_resume = resumed_at(&std::fs::read_to_string(&log).unwrap());
    let output = run(tether().arg("resume").arg(&crashed), TIMEOUT);
    let text = stderr(&output);
    assert!(output.status.success(), "resume: {text}");
    let second_resume = resumed_at(&text);
    eprintln!(
        "killed after {first_kill} lines, resumed at iteration {first_resume}; \
         killed after {second_kill} lines, resumed at iteration {second_resume}"
    );
    // The checkpoint is written after the metrics line: it covers the last line or the one
    // before it (a kill between the two writes).
    for (killed, resumed) in [(first_kill, first_resume), (second_kill, second_resume)] {
        assert!(
            resumed == killed || resumed + 1 == killed,
            "killed after {killed} metrics lines, resumed at iteration {resumed}"
        );
    }

    let a = std::fs::read(straight.join("policy.bin")).unwrap();
    let b = std::fs::read(crashed.join("policy.bin")).unwrap();
    assert!(
        a == b,
        "policy.bin differs between the straight and the resumed run"
    );
    let a = std::fs::read(straight.join("best_policy.bin")).unwrap();
    let b = std::fs::read(crashed.join("best_policy.bin")).unwrap();
    assert!(
        a == b,
        "best_policy.bin differs between the straight and the resumed run"
    );
    let candidates = |run: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(run.join("candidates"))
            .expect("a candidates folder")
            .map(|e| {
                let e = e.expect("an entry");
                let name = e.file_name().into_string().expect("utf-8");
                (name, std::fs::read(e.path()).expect("a candidate"))
            })
            .collect();
        files.sort();
        files
    };
    let kept = candidates(&straight);
    assert_eq!(kept.len(), 3, "the 3 best are kept, no others");
    assert!(kept == candidates(&crashed), "the same candidate files");
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
