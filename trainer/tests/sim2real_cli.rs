//! The sim-to-real workflow through the `tether` binary: plant settings in a config file
//! (checked before any device starts, recorded in the run), `tether eval --config` on
//! another plant, `tether sim --config` as a rig whose physics the trainer is not told,
//! and `tether train --init` from a run folder or a policy.bin.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Scratch, SimProcess, one_line_error, run, stderr, tether};

const MINUTES: Duration = Duration::from_secs(300);

/// A small pendulum setting: [8] networks, 1024 steps in 512-step iterations.
const SMALL: &str = "plant = \"pendulum\"\ntotal_steps = 1024\nsteps_per_iteration = 512\n\
                     [trpo]\npolicy_hidden = [8]\nvalue_hidden = [8]\n";

fn write(dir: &Scratch, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a config");
    path.to_string_lossy().into_owned()
}

fn train(args: &[&str]) -> std::process::Output {
    run(tether().arg("train").args(args), MINUTES)
}

/// `tether train --config config --init init` for 512 steps into `out`, with `extra` flags.
fn fine_tune(config: &str, init: &str, extra: &[&str], out: &Path) -> std::process::Output {
    let out = out.to_str().expect("utf-8");
    let base = [
        "--config", config, "--init", init, "--steps", "512", "--out", out,
    ];
    train(&[&base[..], extra].concat())
}

/// `tether eval --json` of `policy` on the pendulum, 6 episodes.
fn eval_json(policy: &Path, extra: &[&str]) -> serde_json::Value {
    eval_episodes_json(policy, 6, extra)
}

fn eval_episodes_json(policy: &Path, episodes: u32, extra: &[&str]) -> serde_json::Value {
    let output = run(
        tether()
            .args(["eval", "--plant", "pendulum", "--json", "--episodes"])
            .arg(episodes.to_string())
            .arg("--policy")
            .arg(policy)
            .args(extra),
        MINUTES,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// The lines of a run folder's `metrics.jsonl`, parsed.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn bad_plant_settings_stop_before_any_device_naming_the_key() {
    let dir = Scratch::new("plant-settings");
    for (settings, key, words) in [
        (
            "[plant_params]\nmass = -1.0\n",
            "plant_params.mass",
            "positive",
        ),
        (
            "[plant_params]\nmas = 1.0\n",
            "plant_params.mas",
            "length (m)",
        ),
        (
            "[plant_params]\nlatency_steps = 5\n",
            "plant_params.latency_steps",
            "at most 3",
        ),
        (
            "[plant_randomize]\nlength = [1.2, 0.8]\n",
            "plant_randomize.length",
            "low ≤ high",
        ),
    ] {
        let config = write(&dir, "bad.toml", &format!("{SMALL}{settings}"));
        let out = dir.join("never");
        let output = train(&["--config", &config, "--out", out.to_str().expect("utf-8")]);
        let line = one_line_error(&output);
        assert!(line.contains(key) && line.contains(words), "{line}");
        assert!(!out.exists(), "no run folder for a run that never started");
    }
    let config = write(
        &dir,
        "cartpole.toml",
        "plant = \"cartpole\"\n[plant_params]\ndeadzone = 0.1\n",
    );
    let line = one_line_error(&train(&["--config", &config]));
    assert!(
        line.contains("plant_params.deadzone") && line.contains("discrete"),
        "{line}"
    );
}

#[test]
fn a_run_records_its_plant_settings_and_eval_takes_a_plants_values() {
    let dir = Scratch::new("dr-run");
    let config = write(
        &dir,
        "dr.toml",
        &format!(
            "{SMALL}[plant_params]\nmax_torque = 1.5\n[plant_randomize]\nmass = [0.8, 1.2]\n\
             latency_steps = [0, 1]\n"
        ),
    );
    let run_dir = dir.join("run");
    let output = train(&[
        "--config",
        &config,
        "--out",
        run_dir.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let recorded = std::fs::read_to_string(run_dir.join("config.toml")).expect("config.toml");
    let table: toml::Table = recorded.parse().expect("TOML");
    assert_eq!(table["plant_params"]["max_torque"].as_float(), Some(1.5));
    let latency = table["plant_randomize"]["latency_steps"]
        .as_array()
        .expect("a range");
    assert_eq!(latency.len(), 2);

    // The same policy on a weaker motor, then on the nominal plant.
    let weak = write(
        &dir,
        "weak.toml",
        "plant = \"pendulum\"\n[trpo]\ntarget_kl = 1.0\n[plant_params]\nmax_torque = 0.2\n\
         [plant_randomize]\nmass = [0.5, 2.0]\n",
    );
    let policy = run_dir.join("policy.bin");
    let on_weak = eval_json(&policy, &["--config", &weak]);
    let on_nominal = eval_json(&policy, &[]);
    assert_ne!(on_weak["returns"], on_nominal["returns"]);
    assert_eq!(on_weak["lengths"].as_array().map(Vec::len), Some(6));
    // Only the values count: the file's ranges and other sections are ignored.
    let values_only = write(&dir, "values.toml", "[plant_params]\nmax_torque = 0.2\n");
    assert_eq!(
        eval_json(&policy, &["--config", &values_only])["returns"],
        on_weak["returns"]
    );
}

/// `tether eval --randomize` with a run's `config.toml` and seed runs the episodes of the
/// run's own `[evaluation]`: the last policy scores what its evaluation recorded, bit for
/// bit, and more episodes keep the first ones.
#[test]
fn eval_randomize_replays_a_runs_evaluation_episodes() {
    let dir = Scratch::new("dr-eval");
    let config = write(
        &dir,
        "dr.toml",
        &format!(
            "range_end_share = 0.5\n{SMALL}[plant_randomize]\nmass = [0.5, 1.5]\n\
             length = [0.7, 1.3]\n[evaluation]\nevery = 1\nepisodes = 6\n"
        ),
    );
    let run_dir = dir.join("run");
    let output = train(&[
        "--config",
        &config,
        "--seed",
        "5",
        "--out",
        run_dir.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = metrics(&run_dir);
    let recorded = lines.last().expect("a metrics line")["eval_mean_return"]
        .as_f64()
        .expect("the last policy is evaluated");

    let recorded_config = run_dir.join("config.toml");
    let recorded_config = recorded_config.to_str().expect("utf-8");
    let policy = run_dir.join("policy.bin");
    let replay = eval_json(
        &policy,
        &["--config", recorded_config, "--randomize", "--seed", "5"],
    );
    assert_eq!(replay["mean_return"].as_f64(), Some(recorded));
    // Without --randomize the same file gives the nominal plant, other returns.
    let nominal = eval_json(&policy, &["--config", recorded_config, "--seed", "5"]);
    assert_ne!(nominal["returns"], replay["returns"]);
    // Twelve episodes: each of the two devices runs its first three again, then three more.
    let more = eval_episodes_json(
        &policy,
        12,
        &["--config", recorded_config, "--randomize", "--seed", "5"],
    );
    let six = replay["returns"].as_array().expect("returns");
    let twelve = more["returns"].as_array().expect("returns");
    assert_eq!(twelve.len(), 12);
    assert_eq!(&twelve[..3], &six[..3]);
    assert_eq!(&twelve[6..9], &six[3..]);
    // The run's range end share is part of what is replayed: without it, other plants.
    let recorded_text = std::fs::read_to_string(run_dir.join("config.toml")).expect("config");
    assert!(
        recorded_text.contains("range_end_share = 0.5"),
        "{recorded_text}"
    );
    let uniform = write(
        &dir,
        "uniform.toml",
        &recorded_text.replace("range_end_share = 0.5\n", ""),
    );
    let uniform = eval_json(
        &policy,
        &["--config", &uniform, "--randomize", "--seed", "5"],
    );
    assert_ne!(uniform["returns"], replay["returns"]);

    // Ranges asked for where the file has none: one clear error.
    let values_only = write(&dir, "values.toml", "[plant_params]\nmax_torque = 0.2\n");
    let output = run(
        tether()
            .args([
                "eval",
                "--plant",
                "pendulum",
                "--randomize",
                "--config",
                &values_only,
            ])
            .arg("--policy")
            .arg(&policy),
        MINUTES,
    );
    assert!(!output.status.success());
    let error = one_line_error(&output);
    assert!(
        error.contains("[plant_randomize]") && error.contains("values.toml"),
        "{error}"
    );
}

#[test]
fn a_rig_served_with_its_own_physics_trains_but_refuses_to_be_told_any() {
    let dir = Scratch::new("rig");
    let rig_config = write(
        &dir,
        "rig.toml",
        "plant = \"pendulum\"\n[plant_params]\nmass = 1.3\n",
    );
    let rig = SimProcess::start_with(&["--config", &rig_config]);
    let dr = write(
        &dir,
        "dr.toml",
        &format!("{SMALL}[plant_randomize]\nmass = [0.9, 1.1]\n"),
    );
    let line = one_line_error(&train(&[
        "--config", &dr, "--port", &rig.path, "--plant", "pendulum",
    ]));
    assert!(
        line.contains("refused the plant parameters") && line.contains("physics is its own"),
        "{line}"
    );
    let plain = write(&dir, "plain.toml", SMALL);
    let out = dir.join("on-rig");
    let output = train(&[
        "--config",
        &plain,
        "--port",
        &rig.path,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn init_starts_from_a_run_folder_or_a_policy_and_refuses_other_shapes() {
    let dir = Scratch::new("init");
    let config = write(&dir, "small.toml", SMALL);
    let source = dir.join("source");
    let source_arg = source.to_str().expect("utf-8").to_string();
    let output = train(&["--config", &config, "--seed", "3", "--out", &source_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let policy = source.join("policy.bin");
    let policy_arg = policy.to_str().expect("utf-8").to_string();

    // A cold run of the same settings and seed, to tell a warm start from a fresh learner:
    // the devices' seeds and initial states are the same, only the policy differs.
    let first_return =
        |run: &Path| -> f64 { metrics(run)[0]["mean_return"].as_f64().expect("a return") };
    let cold = dir.join("cold");
    let output = train(&[
        "--config",
        &config,
        "--steps",
        "512",
        "--out",
        cold.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    for init in [&source_arg, &policy_arg] {
        let out = dir.join(&format!("fine-{}", init.len()));
        let output = fine_tune(&config, init, &[], &out);
        let text = stderr(&output);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("starting from"), "{text}");
        let recorded = std::fs::read_to_string(out.join("config.toml")).expect("config");
        assert!(
            recorded.contains(&format!("init = \"{init}\"")),
            "{recorded}"
        );
        assert_ne!(
            first_return(&out),
            first_return(&cold),
            "{init}: not a fresh learner"
        );
    }

    let wider = write(
        &dir,
        "wider.toml",
        &SMALL.replace("policy_hidden = [8]", "policy_hidden = [16]"),
    );
    let line = one_line_error(&train(&["--config", &wider, "--init", &source_arg]));
    assert!(line.contains("[8]") && line.contains("[16]"), "{line}");
    let line = one_line_error(&train(&["--config", &config, "--init", "/nonexistent/run"]));
    assert!(line.contains("--init /nonexistent/run"), "{line}");
    // The source ran no [evaluation], so it has no best policy to start from; a policy
    // file is one policy already.
    let best = ["--init-policy", "best"];
    let line = one_line_error(&train(
        &[&["--config", &config, "--init", &source_arg], &best[..]].concat(),
    ));
    assert!(
        line.contains("no best_policy.bin") && line.contains("--init-policy last"),
        "{line}"
    );
    let line = one_line_error(&train(
        &[&["--config", &config, "--init", &policy_arg], &best[..]].concat(),
    ));
    assert!(line.contains("give the run folder"), "{line}");
}

/// `--init-policy best` starts from the run folder's best_policy.bin (here the mean of two
/// evaluated policies): the new run's first evaluation-free round runs that policy, so its
/// first return differs from a start from the same folder's last policy, and the choice is
/// recorded in the run's config.toml.
#[test]
fn init_policy_best_starts_from_the_deployed_policy() {
    let dir = Scratch::new("init-best");
    let evaluated = format!("{SMALL}\n[evaluation]\nevery = 1\nepisodes = 2\naverage_best = 2\n");
    let config = write(&dir, "evaluated.toml", &evaluated);
    let plain = write(&dir, "small.toml", SMALL);
    let source = dir.join("source");
    let source_arg = source.to_str().expect("utf-8").to_string();
    let output = train(&[
        "--config",
        &config,
        "--seed",
        "3",
        "--steps",
        "2048",
        "--out",
        &source_arg,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(source.join("best_policy.bin").is_file());
    assert!(source.join("candidates").is_dir());

    let mut first = Vec::new();
    for which in ["last", "best"] {
        let out = dir.join(&format!("fine-{which}"));
        let output = fine_tune(&plain, &source_arg, &["--init-policy", which], &out);
        let text = stderr(&output);
        assert!(output.status.success(), "{text}");
        let said = if which == "best" {
            "its best_policy.bin"
        } else {
            "its last policy"
        };
        assert!(text.contains(said), "{text}");
        let recorded = std::fs::read_to_string(out.join("config.toml")).expect("config");
        assert!(
            recorded.contains(&format!("init_policy = \"{which}\"")),
            "{recorded}"
        );
        first.push(metrics(&out)[0]["mean_return"].as_f64().expect("a return"));
    }
    assert_ne!(first[0], first[1], "the best policy is not the last one");
}
