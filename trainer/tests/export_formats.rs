//! `tether export --format onnx | c` on a trained run: the default file names, the file the
//! library writes (whose numerics `interop::onnx` and `interop::c_header` test over every
//! shape), an ONNX model tract runs like the policy, and the bad inputs: no policy yet, an
//! old run without plant.json, an unknown format, an unwritable destination. An existing
//! file is replaced whole (temporary file and rename) and kept when the export fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Scratch, one_line_error, run, stderr, tether};
use tether_trainer::interop::{DeployedPolicy, DeterministicAction, c_header, onnx};
use tether_trainer::run::PolicyFile;
use tether_trainer::run::folder::RunFolder;
use tract_onnx::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(180);

/// A 2-iteration pendulum run (4096 steps) in `dir/run`.
fn trained_run(dir: &Scratch) -> PathBuf {
    let out = dir.join("run");
    let output = run(
        tether()
            .args([
                "train", "--plant", "pendulum", "--seed", "1", "--steps", "4096",
            ])
            .arg("--out")
            .arg(&out),
        TIMEOUT,
    );
    assert!(output.status.success(), "train: {}", stderr(&output));
    out
}

/// Runs `tether export --run <run> --format <format> [extra]`; returns the printed path.
fn export(run_dir: &Path, format: &str, extra: &[&str]) -> PathBuf {
    let output = run(
        tether()
            .args(["export", "--format", format, "--run"])
            .arg(run_dir)
            .args(extra),
        TIMEOUT,
    );
    assert!(
        output.status.success(),
        "export {format}: {}",
        stderr(&output)
    );
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    PathBuf::from(printed.trim())
}

fn deployed(run_dir: &Path) -> DeployedPolicy {
    let folder = RunFolder::open(run_dir).expect("a run folder");
    let policy = PolicyFile::read_bin(&folder.policy_path()).expect("policy.bin");
    DeployedPolicy::for_run(&folder, policy).expect("policy, plant and version")
}

#[test]
fn onnx_and_c_exports_of_a_trained_run() {
    let dir = Scratch::new("export-formats");
    let run_dir = trained_run(&dir);
    let policy = deployed(&run_dir);
    assert_eq!(policy.version(), 3, "two updates after the initial policy");
    assert_eq!(policy.plant().name.as_str(), "pendulum");

    let model_path = export(&run_dir, "onnx", &[]);
    assert_eq!(model_path, run_dir.join("policy.onnx"));
    let bytes = std::fs::read(&model_path).expect("policy.onnx");
    assert_eq!(bytes, onnx::model_bytes(&policy));

    // tract runs the file like the shared forward pass, on observations around the
    // pendulum's range (cos, sin in [-1, 1], angular velocity in [-8, 8]).
    let count = 1000;
    let obs: Vec<f32> = (0..count)
        .flat_map(|i| {
            let angle = i as f32 * 0.0137;
            [
                angle.cos(),
                angle.sin(),
                ((i * 7919) % 1601) as f32 / 100.0 - 8.0,
            ]
        })
        .collect();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact([count, 3]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the model");
    let input = Tensor::from_shape(&[count, 3], &obs).expect("input tensor");
    let outputs = model
        .run(tvec!(input.into()))
        .expect("tract runs the model");
    let actions = outputs[0]
        .to_plain_array_view::<f32>()
        .expect("f32 actions");
    let mut worst = 0.0f32;
    for (got, o) in actions.iter().zip(obs.chunks_exact(3)) {
        let Some(DeterministicAction::Continuous(want)) = policy.act(o) else {
            panic!("a continuous action")
        };
        assert!(
            (-2.0..=2.0).contains(got),
            "clamped to the torque bounds: {got}"
        );
        worst = worst.max((got - want[0]).abs());
    }
    assert!(worst <= 1e-5, "worst difference {worst}");

    let header_path = export(&run_dir, "c", &[]);
    assert_eq!(header_path, run_dir.join("policy.h"));
    let header = std::fs::read_to_string(&header_path).expect("policy.h");
    assert_eq!(header, c_header::header_source(&policy));
    assert!(header.contains("#define TETHER_POLICY_PLANT \"pendulum\""));

    let custom = dir.join("elsewhere.h");
    assert_eq!(
        export(&run_dir, "c", &["--out", custom.to_str().unwrap()]),
        custom
    );
    assert_eq!(std::fs::read_to_string(&custom).unwrap(), header);
}

#[test]
fn an_existing_file_is_replaced_whole_and_kept_when_the_export_fails() {
    let dir = Scratch::new("export-atomic");
    let run_dir = trained_run(&dir);
    let target = run_dir.join("policy.onnx");
    std::fs::write(&target, b"an older export").unwrap();
    let other_name = dir.join("same-inode");
    std::fs::hard_link(&target, &other_name).unwrap();
    export(&run_dir, "onnx", &[]);
    // A new file was renamed over the old one: the old inode still holds the old bytes.
    assert_eq!(std::fs::read(&other_name).unwrap(), b"an older export");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        onnx::model_bytes(&deployed(&run_dir))
    );
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A run from before plant.json: a clear error, and the existing header is untouched.
    std::fs::write(run_dir.join("policy.h"), "/* mine */").unwrap();
    std::fs::remove_file(run_dir.join("plant.json")).unwrap();
    let output = run(
        tether()
            .args(["export", "--format", "c", "--run"])
            .arg(&run_dir),
        TIMEOUT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains("plant.json") && line.contains("tether resume"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("policy.h")).unwrap(),
        "/* mine */"
    );
}

#[test]
fn bad_exports_are_one_clear_error() {
    let dir = Scratch::new("export-bad");
    // A run folder whose first iteration never finished: no policy yet.
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("config.toml"), "plant = \"pendulum\"\n").unwrap();
    for format in ["onnx", "c", "bin"] {
        let output = run(
            tether()
                .args(["export", "--format", format, "--run"])
                .arg(&fresh),
            TIMEOUT,
        );
        let line = one_line_error(&output);
        assert!(line.contains("has no policy yet"), "{format}: {line}");
        assert!(
            line.contains(&fresh.display().to_string()),
            "{format}: {line}"
        );
    }

    // An unknown format: clap's usage error, naming the value and the formats there are.
    let output = run(
        tether()
            .args(["export", "--format", "tflite", "--run"])
            .arg(&fresh),
        TIMEOUT,
    );
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("tflite") && text.contains("onnx") && text.contains(" c"),
        "{text}"
    );

    // Unwritable destinations: a missing folder, a path under a file.
    let run_dir = trained_run(&dir);
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "").unwrap();
    for out in [
        dir.join("no/such/folder/policy.onnx"),
        blocker.join("policy.onnx"),
    ] {
        let output = run(
            tether()
                .args(["export", "--format", "onnx", "--run"])
                .arg(&run_dir)
                .arg("--out")
                .arg(&out),
            TIMEOUT,
        );
        let line = one_line_error(&output);
        assert!(
            line.contains("cannot write") && line.contains(&out.display().to_string()),
            "{line}"
        );
        assert!(!out.exists());
    }
}
