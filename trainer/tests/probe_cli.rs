//! `tether probe` as a user runs it: against a simulated device in-process and against a
//! `tether sim` device on a pty (the way a serial rig is reached), with test pulses and
//! their bounds.

mod common;

use std::time::Duration;

use common::{SimProcess, one_line_error, run, stderr, tether};

const SHORT: Duration = Duration::from_secs(60);

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The description, a live stream, and pulses whose directions follow their signs: on the
/// qube model a positive voltage turns the arm positive, a negative one back.
#[test]
fn probe_streams_and_reports_pulse_directions() {
    let out = run(
        tether().args([
            "probe",
            "--plant",
            "qube",
            "--seconds",
            "0.3",
            "--pulse",
            "1.0",
            "--pulse-ms",
            "200",
        ]),
        SHORT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("plant qube"), "{text}");
    assert!(text.contains("control rate 250 Hz"), "{text}");
    assert!(text.contains(" obs ["), "observations streamed: {text}");
    let after_plus = text.split("pulse [+1.0]").nth(1).expect("the +1 V report");
    let plus = after_plus.split("pulse [-1.0]").next().unwrap_or_default();
    assert!(plus.contains("arm θ: moved positive"), "{text}");
    let minus = text.split("pulse [-1.0]").nth(1).expect("the -1 V report");
    assert!(minus.contains("arm θ: moved negative"), "{text}");
}

/// Over a serial link (a `tether sim` pty), as on a rig.
#[test]
fn probe_over_a_serial_port() {
    let sim = SimProcess::start("pendulum");
    let out = run(
        tether().args([
            "probe",
            "--port",
            &sim.path,
            "--seconds",
            "0.2",
            "--pulse",
            "0.4",
            "--pulse-ms",
            "100",
        ]),
        SHORT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("plant pendulum"), "{text}");
    assert!(text.contains("pulse [+0.4] for 100 ms"), "{text}");
}

/// Above a quarter of the bound, or longer than half a second: refused before anything
/// moves, with the limits in the message.
#[test]
fn probe_refuses_strong_or_long_pulses() {
    for (volts, ms) in [("1.6", "100"), ("1.0", "600")] {
        let out = run(
            tether().args([
                "probe",
                "--plant",
                "qube",
                "--seconds",
                "0",
                "--pulse",
                volts,
                "--pulse-ms",
                ms,
            ]),
            SHORT,
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let line = one_line_error(&out);
        assert!(
            line.contains("at most 1.500") && line.contains("500 ms"),
            "{line}"
        );
    }
}
