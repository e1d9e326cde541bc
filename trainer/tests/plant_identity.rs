//! A real device's plant is the one it reports in its handshake: the run takes that plant's
//! preset and names its folder after it; `--plant` is a check; a plant tether has no preset
//! for trains with the generic preset and says so once.

mod common;

use std::time::Duration;

use common::{PtyDevice, Renamed, Scratch, SimProcess, one_line_error, run, stderr, tether};
use tether_firmware::plant::Pendulum;

const LONG: Duration = Duration::from_secs(180);
const SHORT: Duration = Duration::from_secs(60);

/// The resolved `config.toml` of a run folder, parsed.
fn config_of(run: &std::path::Path) -> toml::Table {
    std::fs::read_to_string(run.join("config.toml"))
        .expect("config.toml written")
        .parse()
        .expect("valid TOML")
}

/// The one run folder `tether train` made under `runs/`.
fn only_run(runs: &std::path::Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(runs)
        .expect("runs/ created")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().expect("one run")
}

/// `tether sim --plant qube` and `tether train --port <its pty>` with no `--plant`: the run
/// is a qube run — progress line, folder name, `config.toml` and the qube preset.
#[test]
fn a_qube_on_the_line_trains_as_a_qube_without_naming_it() {
    let sim = SimProcess::start("qube");
    let dir = Scratch::new("qube-port");
    let output = run(
        tether().current_dir(&dir.0).args([
            "train", "--port", &sim.path, "--steps", "100", "--seed", "2",
        ]),
        LONG,
    );
    let text = stderr(&output);
    assert!(output.status.success(), "train failed: {text}");
    assert!(text.contains("training qube for 100 steps"), "{text}");
    assert!(!text.contains("pendulum"), "{text}");
    assert!(!text.contains("no preset"), "{text}");
    let folder = only_run(&dir.join("runs"));
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("qube-"),
        "the folder is named after the plant: {name}"
    );
    let config = config_of(&folder);
    assert_eq!(config["plant"].as_str(), Some("qube"));
    assert_eq!(config["preset"].as_str(), Some("qube"));
    assert_eq!(config["steps_per_iteration"].as_integer(), Some(20_000));
    let trpo = config["trpo"].as_table().expect("[trpo]");
    assert_eq!(trpo["gamma"].as_float(), Some(0.995));
    assert_eq!(trpo["normalize_observations"].as_bool(), Some(true));
}

/// `--plant pendulum` against a qube stops the run before training, in one line naming both
/// plants, and leaves no run folder behind.
#[test]
fn naming_another_plant_than_the_device_reports_is_one_clear_error() {
    let sim = SimProcess::start("qube");
    let dir = Scratch::new("qube-mismatch");
    let output = run(
        tether().current_dir(&dir.0).args([
            "train", "--port", &sim.path, "--plant", "pendulum", "--steps", "100",
        ]),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains(&sim.path) && line.contains("`qube`") && line.contains("`pendulum`"),
        "{line}"
    );
    assert!(
        !stderr(&output).contains("training "),
        "no training started"
    );
    assert!(!dir.join("runs").exists(), "no run folder");

    // The same check from a config file's `plant`.
    let file = dir.join("run.toml");
    std::fs::write(&file, "plant = \"cartpole\"\n").unwrap();
    let output = run(
        tether()
            .current_dir(&dir.0)
            .args(["train", "--port", &sim.path, "--config"])
            .arg(&file),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains("`qube`") && line.contains("`cartpole`"),
        "{line}"
    );
}

/// A device reporting a plant tether has no preset for trains with the generic preset and
/// says so once; `preset = "pendulum"` in a config file picks the pendulum's instead.
#[test]
fn an_unknown_plant_trains_with_the_generic_preset_and_a_notice() {
    let device = PtyDevice::start(Renamed {
        inner: Pendulum::new(),
        name: "myrig",
    });
    let dir = Scratch::new("myrig");
    let out = dir.join("run");
    let output = run(
        tether()
            .args(["train", "--port", &device.path, "--steps", "300", "--out"])
            .arg(&out),
        LONG,
    );
    let text = stderr(&output);
    assert!(output.status.success(), "train failed: {text}");
    assert_eq!(text.matches("no preset").count(), 1, "one notice: {text}");
    assert!(text.contains("plant `myrig` has no preset"), "{text}");
    assert!(text.contains("training myrig for 300 steps"), "{text}");
    let config = config_of(&out);
    assert_eq!(config["plant"].as_str(), Some("myrig"));
    assert_eq!(config["preset"].as_str(), Some("generic"));
    assert_eq!(config["steps_per_iteration"].as_integer(), Some(2048));
    let trpo = config["trpo"].as_table().expect("[trpo]");
    assert_eq!(trpo["gamma"].as_float(), Some(0.99));
    assert_eq!(trpo["normalize_observations"].as_bool(), Some(true));

    let file = dir.join("mine.toml");
    std::fs::write(&file, "preset = \"pendulum\"\n").unwrap();
    let out = dir.join("run-with-preset");
    let output = run(
        tether()
            .args([
                "train",
                "--port",
                &device.path,
                "--steps",
                "300",
                "--config",
            ])
            .arg(&file)
            .arg("--out")
            .arg(&out),
        LONG,
    );
    let text = stderr(&output);
    assert!(output.status.success(), "train failed: {text}");
    assert!(!text.contains("no preset"), "{text}");
    let config = config_of(&out);
    assert_eq!(config["plant"].as_str(), Some("myrig"));
    assert_eq!(config["preset"].as_str(), Some("pendulum"));
    let trpo = config["trpo"].as_table().expect("[trpo]");
    assert_eq!(trpo["gamma"].as_float(), Some(0.9));
}

/// Simulated devices still need a plant tether models, and beside real devices a named one.
#[test]
fn simulated_devices_need_a_known_plant() {
    let dir = Scratch::new("sim-plants");
    let output = run(
        tether()
            .current_dir(&dir.0)
            .args(["train", "--plant", "segway", "--steps", "100"]),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(
        line.contains("`segway`") && line.contains("simulated plants"),
        "{line}"
    );

    let device = PtyDevice::start(Renamed {
        inner: Pendulum::new(),
        name: "myrig",
    });
    let output = run(
        tether().current_dir(&dir.0).args([
            "train",
            "--port",
            &device.path,
            "--sim",
            "1",
            "--steps",
            "100",
        ]),
        SHORT,
    );
    let line = one_line_error(&output);
    assert!(line.contains("need --plant"), "{line}");
    assert!(!dir.join("runs").exists(), "no run folder");
}
