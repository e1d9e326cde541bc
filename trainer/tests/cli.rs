//! The `tether` binary as a user runs it: a simulated device in one process, training and
//! evaluation in others, the run folder's tools, and the errors a user meets first.

mod common;

use std::time::Duration;

use common::{Scratch, SimProcess, one_line_error, run, stderr, tether};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

/// `tether sim` in one process; `tether train --port <its pty>` in another writes a complete
/// run folder; `tether eval --json` on the result prints exactly one JSON object with the
/// documented fields; `tether export --format rust`, `tether plot` and `tether ports` work on
/// it and exit 0.
#[test]
fn sim_then_train_then_eval_export_plot_ports() {
    let sim = SimProcess::start("pendulum");
    let dir = Scratch::new("user");
    let out = dir.join("run");

    let train = run(
        tether()
            .args([
                "train", "--port", &sim.path, "--steps", "1024", "--seed", "3",
            ])
            .arg("--out")
            .arg(&out),
        LONG,
    );
    assert!(train.status.success(), "train failed: {}", stderr(&train));
    let text = stderr(&train);
    assert!(
        text.contains(&sim.path),
        "the banner names the port: {text}"
    );
    assert!(text.contains("done:"), "the summary says done: {text}");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint.bin",
        "policy.bin",
        "curve.svg",
        "curve.png",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing after train: {text}"
        );
    }
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains(&sim.path) && config.contains("sim = 0"),
        "{config}"
    );

    let eval = run(
        tether()
            .args([
                "eval",
                "--json",
                "--episodes",
                "4",
                "--port",
                &sim.path,
                "--policy",
            ])
            .arg(out.join("policy.bin")),
        LONG,
    );
    assert!(eval.status.success(), "eval failed: {}", stderr(&eval));
    let stdout = String::from_utf8(eval.stdout.clone()).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout:?}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
    let object = report.as_object().expect("a JSON object");
    assert_eq!(object["episodes"].as_u64(), Some(4), "{stdout}");
    for key in ["mean_return", "std_return", "mean_length"] {
        assert!(
            object[key].as_f64().is_some_and(f64::is_finite),
            "{key} in {stdout}"
        );
    }
    assert_eq!(
        object["mean_length"].as_f64(),
        Some(200.0),
        "pendulum episodes are 200 steps"
    );
    let mean = object["mean_return"].as_f64().unwrap();
    assert!(
        (-2000.0..=0.0).contains(&mean),
        "pendulum returns are in [-2000, 0]: {mean}"
    );
    // The pendulum's rewards are all ≤ 0, so its last second (20 steps at 20 Hz) sums to no
    // less than the whole episode, and to no more than 0.
    let finals = object["final_second_rewards"].as_array().expect("an array");
    let returns = object["returns"].as_array().expect("an array");
    assert_eq!(finals.len(), 4, "{stdout}");
    for (last, whole) in finals.iter().zip(returns) {
        let (last, whole) = (last.as_f64().unwrap(), whole.as_f64().unwrap());
        assert!(
            (whole - 1e-3..=0.0).contains(&(20.0 * last)),
            "last second {last} per step against the return {whole}"
        );
    }

    let export = run(
        tether()
            .args(["export", "--format", "rust", "--run"])
            .arg(&out),
        SHORT,
    );
    assert!(
        export.status.success(),
        "export failed: {}",
        stderr(&export)
    );
    let source = std::fs::read_to_string(out.join("policy.rs")).expect("policy.rs written");
    assert!(
        source.contains("static"),
        "a static parameter array: {source:.200}"
    );

    std::fs::remove_file(out.join("curve.svg")).unwrap();
    let plot = run(tether().arg("plot").arg(&out), SHORT);
    assert!(plot.status.success(), "plot failed: {}", stderr(&plot));
    assert!(out.join("curve.svg").is_file(), "plot redrew curve.svg");

    let ports = run(tether().arg("ports"), SHORT);
    assert!(ports.status.success(), "ports failed: {}", stderr(&ports));
}

/// A new run in a folder that already holds one is refused in one sentence that points to
/// `tether resume`, with no backtrace, and the old run is left alone.
#[test]
fn train_into_an_existing_run_is_refused_with_a_resume_hint() {
    let dir = Scratch::new("existing");
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.toml"), "plant = \"pendulum\"\n").unwrap();
    let output = run(
        tether().args(["train", "--steps", "10", "--out"]).arg(&out),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(line.contains("already holds a run"), "{line}");
    assert!(
        line.contains(&format!("tether resume {}", out.display())),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.toml")).unwrap(),
        "plant = \"pendulum\"\n"
    );
    assert!(!out.join("metrics.jsonl").exists());
}

/// A serial port that does not exist is named in the error, which points to `tether ports`.
#[test]
fn missing_port_is_a_clear_error_naming_it() {
    let dir = Scratch::new("noport");
    let port = "/dev/tether-no-such-port";
    let output = run(
        tether()
            .args(["train", "--port", port, "--steps", "10", "--out"])
            .arg(dir.join("run")),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains(port) && line.contains("does not exist"),
        "{line}"
    );
    assert!(line.contains("tether ports"), "{line}");
}

/// A misspelt key in a config file is reported with the key and the file.
#[test]
fn unknown_config_key_names_the_key_and_the_file() {
    let dir = Scratch::new("badkey");
    let file = dir.join("mine.toml");
    std::fs::write(&file, "plant = \"pendulum\"\n[trpo]\ntarget_kll = 0.02\n").unwrap();
    let output = run(
        tether()
            .arg("train")
            .arg("--config")
            .arg(&file)
            .arg("--out")
            .arg(dir.join("run")),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(line.contains("target_kll"), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");
}

/// A run with an `[evaluation]` table writes `best_policy.bin` and says so on its records;
/// `tether export --best` exports it, and on a run that never evaluated `--best` is one
/// clear error that points to the latest policy.
#[test]
fn evaluated_runs_keep_a_best_policy_that_export_best_writes() {
    let dir = Scratch::new("best");
    let file = dir.join("evaluated.toml");
    std::fs::write(
        &file,
        "plant = \"pendulum\"\nsteps_per_iteration = 400\n[evaluation]\nevery = 1\nepisodes = 2\n",
    )
    .unwrap();
    let out = dir.join("run");
    let train = run(
        tether()
            .args(["train", "--steps", "1200", "--config"])
            .arg(&file)
            .arg("--out")
            .arg(&out),
        LONG,
    );
    assert!(train.status.success(), "train failed: {}", stderr(&train));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    assert!(
        metrics.lines().all(|l| l.contains("\"eval_mean_return\":")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"eval_best\":true"))
    );
    let best = std::fs::read(out.join("best_policy.bin")).expect("best_policy.bin written");

    let exported = dir.join("best-export.bin");
    let export = run(
        tether()
            .args(["export", "--best", "--run"])
            .arg(&out)
            .arg("--out")
            .arg(&exported),
        SHORT,
    );
    assert!(
        export.status.success(),
        "export failed: {}",
        stderr(&export)
    );
    assert_eq!(std::fs::read(&exported).unwrap(), best);

    let plain = dir.join("plain");
    let train = run(
        tether()
            .args(["train", "--steps", "400", "--out"])
            .arg(&plain),
        LONG,
    );
    assert!(train.status.success(), "train failed: {}", stderr(&train));
    let output = run(
        tether().args(["export", "--best", "--run"]).arg(&plain),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains("best_policy.bin") && line.contains("without --best"),
        "{line}"
    );
}
