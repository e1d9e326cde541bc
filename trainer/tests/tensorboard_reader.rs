//! tether's TensorBoard event files read by TensorBoard's own reader (its Python
//! `EventAccumulator`, installed by `scripts/setup.sh` into `.venv/`): every scalar equals
//! its twin field in `metrics.jsonl`, and a resumed run, even after a crash left events past
//! the checkpoint and a torn record, reads as one curve with every step once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Scratch, run, stderr, tether};
use prost::Message;
use serde_json::Value;
use tether_trainer::run::metrics::read_metrics;
use tether_trainer::run::tensorboard::event::{Event, EventKind, Summary, SummaryValue};
use tether_trainer::run::tensorboard::record::frame_record;
use tether_trainer::run::tensorboard::{event_files, scalars::SCALARS};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The virtual environment `scripts/setup.sh` creates at the workspace root.
fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.is_file(),
        "TensorBoard's reader is not installed ({} is missing): run scripts/setup.sh, which \
         creates .venv/ with the tensorboard package (scripts/test.sh runs it first)",
        python.display()
    );
    python
}

/// `{tag: [(step, value or None for NaN)]}` as TensorBoard's reader sees `logdir`.
fn read_with_tensorboard(logdir: &Path) -> serde_json::Map<String, Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard/dump_scalars.py");
    let output = Command::new(venv_python())
        .arg(script)
        .arg(logdir)
        .output()
        .expect("run the TensorBoard reader");
    assert!(
        output.status.success(),
        "the TensorBoard reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).expect("the reader prints JSON") {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// Asserts that the reader's scalars are exactly `metrics.jsonl`'s twin fields, one point per
/// iteration that has the field (the `eval_` fields only where the run evaluated) at step =
/// environment steps, in order; returns the number of iterations.
fn assert_scalars_match_metrics(run_dir: &Path) -> usize {
    let metrics = read_metrics(&run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let records: Vec<Value> = metrics
        .iter()
        .map(|m| serde_json::to_value(m).expect("a metrics record as JSON"))
        .collect();
    let scalars = read_with_tensorboard(&run_dir.join("tb"));
    assert_eq!(scalars.len(), SCALARS.len(), "tags: {:?}", scalars.keys());
    for (tag, field) in SCALARS {
        let points = scalars[*tag].as_array().expect("points");
        let with_field: Vec<_> = records
            .iter()
            .zip(&metrics)
            .filter(|(record, _)| record.get(*field).is_some())
            .collect();
        assert_eq!(
            points.len(),
            with_field.len(),
            "{tag}: one point per iteration with `{field}`"
        );
        for (point, (record, m)) in points.iter().zip(with_field) {
            let step = point[0].as_u64().expect("a step");
            assert_eq!(step, m.env_steps, "{tag} at iteration {}", m.iteration);
            // TensorBoard keeps f32: the metric rounded to f32, exactly.
            let expected = record[*field].as_f64().map(|v| f64::from(v as f32));
            assert_eq!(
                point[1].as_f64(),
                expected,
                "{tag} ({field}) at iteration {}",
                m.iteration
            );
        }
    }
    metrics.len()
}

/// A pendulum run that evaluates after every second iteration and after the last, so the
/// `eval/` scalars are written on some iterations only.
fn train(out: &Path, steps: &str) {
    let config = out.with_extension("toml");
    std::fs::write(&config, "[evaluation]\nevery = 2\nepisodes = 2\n").expect("config");
    let output = run(
        tether()
            .args([
                "train", "--plant", "pendulum", "--seed", "4", "--steps", steps,
            ])
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(out),
        TIMEOUT,
    );
    assert!(output.status.success(), "train: {}", stderr(&output));
}

#[test]
fn tensorboard_reads_every_scalar_as_metrics_jsonl_has_it() {
    let dir = Scratch::new("tb-reader");
    let out = dir.join("run");
    train(&out, "6000");
    assert_eq!(assert_scalars_match_metrics(&out), 3);
}

/// The state a crash leaves when it lands after iteration 3 was logged but before its
/// checkpoint, and during the write of iteration 4's event: `metrics.jsonl` and the event
/// file one iteration ahead of the checkpoint, a torn record at the end. `tether resume`
/// redoes iteration 3 and goes on; the reader must see each step once.
#[test]
fn a_resumed_run_after_a_crash_reads_as_one_curve() {
    let dir = Scratch::new("tb-resume");
    let out = dir.join("run");
    train(&out, "6000");
    let files = event_files(&out.join("tb")).expect("event files");
    assert_eq!(files.len(), 1);

    let metrics_path = out.join("metrics.jsonl");
    let mut ahead = read_metrics(&metrics_path)
        .expect("metrics")
        .pop()
        .expect("a record");
    ahead.iteration += 1;
    ahead.env_steps += 2048;
    ahead.mean_return = 12345.0; // a value the redone iteration cannot have
    let mut text = std::fs::read_to_string(&metrics_path).unwrap();
    text.push_str(&serde_json::to_string(&ahead).unwrap());
    text.push('\n');
    std::fs::write(&metrics_path, text).unwrap();
    let event = |step: u64, value: f32| Event {
        wall_time: 1.0,
        step: step as i64,
        kind: Some(EventKind::Summary(Summary {
            value: vec![SummaryValue {
                tag: "rollout/ep_rew_mean".into(),
                simple_value: Some(value),
            }],
        })),
    };
    let mut bytes = std::fs::read(&files[0]).unwrap();
    frame_record(&event(ahead.env_steps, 12345.0).encode_to_vec(), &mut bytes);
    let mut torn = Vec::new();
    frame_record(
        &event(ahead.env_steps + 2048, 1.0).encode_to_vec(),
        &mut torn,
    );
    bytes.extend_from_slice(&torn[..torn.len() - 3]);
    std::fs::write(&files[0], bytes).unwrap();

    let output = run(
        tether().arg("resume").arg(&out).args(["--steps", "10000"]),
        TIMEOUT,
    );
    assert!(output.status.success(), "resume: {}", stderr(&output));
    assert_eq!(assert_scalars_match_metrics(&out), 5);
    let scalars = read_with_tensorboard(&out.join("tb"));
    let returns = scalars["rollout/ep_rew_mean"].as_array().unwrap();
    assert!(returns.iter().all(|p| p[1].as_f64() != Some(12345.0)));
    assert_eq!(
        event_files(&out.join("tb")).unwrap(),
        files,
        "still one file, same name"
    );
}
