//! `tether` with QEMU devices (`--link qemu`, `tether sim --qemu`): the board images
//! `scripts/cross.sh` builds, run by qemu-system-arm. However a run ends — an error, Ctrl-C
//! once or twice, SIGTERM, SIGKILL — no QEMU process outlives tether.
//!
//! Each test runs its own copy of the image, so the QEMU processes it caused are exactly
//! those whose command line names that copy: found while tether runs, looked for again
//! after it ended, and killed by the test's guard whatever happens. Without the images
//! (`scripts/test.sh` builds them first) these tests fail, naming scripts/cross.sh.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Scratch, one_line_error, run, stderr, tether};
use tether_trainer::device::qemu::image_for;
use tether_trainer::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceLink, transport};

/// A private copy of `plant`'s image in `scratch`.
fn image_copy(scratch: &Scratch, plant: &str) -> PathBuf {
    let image = image_for(plant, None).unwrap_or_else(|e| panic!("{e}"));
    let copy = scratch.join(&format!("{plant}.elf"));
    std::fs::copy(&image, &copy).expect("copy the image");
    copy
}

/// Live QEMU processes whose command line names `image` (zombies count as ended).
fn qemu_running(image: &Path) -> Vec<u32> {
    let needle = image.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|&b| b == 0);
            let is_qemu = args
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"qemu-system-arm"));
            is_qemu && args.any(|arg| arg == needle) && !zombie(*pid)
        })
        .collect()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(true)
}

/// Kills every QEMU still running `image` when dropped: a failing test leaves none behind.
struct QemuSweep(PathBuf);

impl Drop for QemuSweep {
    fn drop(&mut self) {
        for pid in qemu_running(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Sends `signal` (e.g. "INT") to `pid`.
fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Sends `signal` to the process group `pgid` (a terminal's Ctrl-C reaches the whole
/// foreground group).
fn signal_group(pgid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} -- -{pgid}");
}

/// Waits up to `timeout` for `pred`.
fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pred()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "tether did not end within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A pendulum training run on two QEMU devices of a private image, far from its end, with
/// `steps_per_iteration` steps per iteration.
///
/// The timeouts are generous: once, at a load of about 15 on two cores, both QEMU devices
/// left policy chunks unacknowledged for over the client's 1 s again and again, and with one
/// upload attempt allowed (and 1 s of silence) the SIGTERM run did not end with 130. The
/// lost-device test stops its devices outright, so it needs no short timeouts either.
struct QemuRun {
    _scratch: Scratch,
    image: PathBuf,
    out: PathBuf,
    tether: ChildGuard,
    _sweep: QemuSweep,
}

impl QemuRun {
    fn start(label: &str, plant_image: &str, steps_per_iteration: u32) -> Self {
        let scratch = Scratch::new(label);
        let image = image_copy(&scratch, plant_image);
        let sweep = QemuSweep(image.clone());
        let config = scratch.join("run.toml");
        std::fs::write(
            &config,
            format!(
                "steps_per_iteration = {steps_per_iteration}\n\
                 [timeouts]\nsilence_s = 5.0\nhandshake_s = 5.0\nupload_retries = 5\n"
            ),
        )
        .expect("config");
        let out = scratch.join("run");
        let child = tether()
            .args([
                "train", "--plant", "pendulum", "--link", "qemu", "--sim", "2",
            ])
            .args(["--steps", "100000000", "--seed", "3", "--firmware"])
            .arg(&image)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, as a shell runs a command in the foreground.
            .process_group(0)
            .spawn()
            .expect("tether starts");
        QemuRun {
            _scratch: scratch,
            image,
            out,
            tether: ChildGuard(Some(child)),
            _sweep: sweep,
        }
    }

    fn pid(&self) -> u32 {
        self.tether.0.as_ref().map(Child::id).expect("tether")
    }

    /// Waits for the first iteration on disk; the QEMU devices running then.
    fn wait_for_training(&mut self) -> Vec<u32> {
        self.wait_for(|out| metrics_lines(out) >= 1, "an iteration")
    }

    fn wait_for(&mut self, done: impl Fn(&Path) -> bool, what: &str) -> Vec<u32> {
        let out = self.out.clone();
        let reached = wait_until(Duration::from_secs(120), || done(&out));
        assert!(reached, "no {what} within 120 s: {}", self.stderr_so_far());
        let qemus = qemu_running(&self.image);
        assert_eq!(qemus.len(), 2, "two QEMU devices run: {qemus:?}");
        qemus
    }

    /// Waits for tether to end; its status and stderr.
    fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.tether.0.take().expect("tether");
        let status = wait_exit(&mut child, timeout);
        let output = child.wait_with_output().expect("output");
        (status, stderr(&output))
    }

    fn stderr_so_far(&mut self) -> String {
        match self.tether.0.take() {
            Some(mut child) => {
                let _ = child.kill();
                child
                    .wait_with_output()
                    .map(|o| stderr(&o))
                    .unwrap_or_default()
            }
            None => String::new(),
        }
    }

    /// Every QEMU device is gone within 5 s of tether's end.
    fn assert_no_qemu_left(&self, qemus: &[u32], context: &str) {
        let gone = wait_until(Duration::from_secs(5), || {
            qemu_running(&self.image).is_empty()
        });
        assert!(
            gone,
            "{context}: QEMU still running {:?} (were {qemus:?})",
            qemu_running(&self.image)
        );
    }
}

/// `signal` asks for a graceful stop: the iteration under way finishes, the run is
/// checkpointed, tether exits 130 and stops its QEMU devices. SIGINT goes to tether's
/// process group, as Ctrl-C in a terminal does: the QEMU devices, in their own group, never
/// get it (QEMU would say "terminating on signal 2" and quit under the iteration).
fn graceful_stop_on(signal_name: &str) {
    let mut run = QemuRun::start(&format!("qemu-sig{signal_name}"), "pendulum", 400);
    let qemus = run.wait_for_training();
    match signal_name {
        "INT" => signal_group(run.pid(), signal_name),
        _ => signal(run.pid(), signal_name),
    }
    let (status, text) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text.contains("interrupted:") && text.contains("tether resume"),
        "{text}"
    );
    assert!(!text.contains("terminating on signal"), "{text}");
    assert!(run.out.join("checkpoint.bin").is_file());
    run.assert_no_qemu_left(&qemus, &format!("after SIG{signal_name}"));
}

/// Ctrl-C.
#[test]
fn ctrl_c_finishes_the_iteration_and_stops_the_qemu_devices() {
    graceful_stop_on("INT");
}

/// SIGTERM (a service manager, `kill`) stops the run like Ctrl-C does.
#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    graceful_stop_on("TERM");
}

/// A second Ctrl-C exits at once, without clean-up: the devices die with tether.
#[test]
fn a_second_ctrl_c_exits_at_once_and_the_qemu_devices_die_with_tether() {
    // Long iterations, so the second Ctrl-C lands while the first one waits for the end of
    // the iteration: into the second iteration's collection (one iteration takes about 6 s
    // here), not between rounds, where a Ctrl-C ends the run at once with nothing to finish.
    let mut run = QemuRun::start("qemu-sigint2", "pendulum", 20_000);
    let qemus = run.wait_for_training();
    std::thread::sleep(Duration::from_secs(1));
    signal_group(run.pid(), "INT");
    std::thread::sleep(Duration::from_millis(100));
    signal_group(run.pid(), "INT");
    let (status, text) = run.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("interrupted twice"), "{text}");
    run.assert_no_qemu_left(&qemus, "after a second Ctrl-C");
}

/// SIGKILL leaves tether no say: the parent-death signal takes the devices along.
#[test]
fn sigkill_of_tether_takes_its_qemu_devices_along() {
    let mut run = QemuRun::start("qemu-sigkill", "pendulum", 400);
    let qemus = run.wait_for_training();
    signal(run.pid(), "KILL");
    let (status, _) = run.finish(Duration::from_secs(10));
    assert_eq!(status.code(), None, "killed by a signal");
    run.assert_no_qemu_left(&qemus, "after SIGKILL");
}

/// A run that fails (both devices stop answering: SIGSTOP) ends with its error and stops
/// the QEMU processes, stopped ones included.
#[test]
fn a_run_that_fails_stops_its_qemu_devices() {
    let mut run = QemuRun::start("qemu-lost", "pendulum", 400);
    let qemus = run.wait_for_training();
    for pid in &qemus {
        signal(*pid, "STOP");
    }
    let (status, text) = run.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("every device was lost"), "{text}");
    run.assert_no_qemu_left(&qemus, "after the run failed");
}

/// An error after the devices started (they report another plant than asked for) stops
/// them before tether exits.
#[test]
fn an_error_after_the_devices_started_stops_them() {
    let mut run = QemuRun::start("qemu-mismatch", "qube", 400);
    let (status, text) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("reports plant `qube`") && text.contains("`pendulum`"),
        "{text}"
    );
    assert!(
        !run.out.exists(),
        "no run folder for a run that never started"
    );
    run.assert_no_qemu_left(&[], "after the plant mismatch");
}

/// `tether sim --qemu` serves one QEMU device on a pseudo-terminal, prints its path first,
/// and stops it on Ctrl-C.
#[test]
fn tether_sim_qemu_serves_a_device_and_stops_it() {
    let scratch = Scratch::new("qemu-sim");
    let image = image_copy(&scratch, "qube");
    let _sweep = QemuSweep(image.clone());
    let mut child = tether()
        .args(["sim", "--qemu", "--plant", "qube", "--firmware"])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = ChildGuard(Some(child));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the path line");
    let path = line.trim().to_string();
    assert!(path.starts_with("/dev/pts/"), "{line:?}");
    assert_eq!(qemu_running(&image).len(), 1);

    let address = DeviceAddress::Serial {
        path: path.clone(),
        baud: 115_200,
    };
    let link = DeviceLink::new("qemu", transport::open(&address).expect("open the pty"));
    let client = DeviceClient::connect(link, ClientConfig::default()).expect("handshake");
    assert_eq!(client.info().plant.name.as_str(), "qube");
    drop(client);

    let mut child = guard.0.take().expect("sim");
    signal(child.id(), "INT");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let text = stderr(&child.wait_with_output().expect("output"));
    assert!(status.success(), "{text}");
    assert!(
        text.contains("in QEMU") && text.contains("stopped QEMU"),
        "{text}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || qemu_running(&image).is_empty()),
        "QEMU outlived tether sim"
    );
}

/// Mistakes with QEMU devices are one line naming the fix, before anything starts.
#[test]
fn qemu_mistakes_are_one_line_errors_naming_the_fix() {
    let scratch = Scratch::new("qemu-errors");
    let out = scratch.join("run");
    let train = |extra: &[&str]| {
        let mut cmd = tether();
        cmd.args(["train", "--plant", "pendulum", "--link", "qemu"])
            .args(extra)
            .arg("--out")
            .arg(&out);
        cmd
    };
    let cases: Vec<(std::process::Command, &[&str])> = vec![
        (
            train(&["--faults", "corrupt=0.01"]),
            &["--faults", "QEMU", "--link memory"],
        ),
        (train(&["--emulate-baud"]), &["--emulate-baud", "QEMU"]),
        (
            train(&["--firmware", "/no/such/pendulum.elf"]),
            &["/no/such/pendulum.elf", "scripts/cross.sh"],
        ),
        (
            {
                let mut cmd = train(&[]);
                cmd.current_dir(&scratch.0);
                cmd
            },
            &[
                "not inside a tether checkout",
                "scripts/cross.sh",
                "--firmware",
            ],
        ),
        (
            {
                let mut cmd = train(&[]);
                cmd.env("PATH", scratch.join("empty"));
                cmd
            },
            &["qemu-system-arm is not installed", "scripts/setup.sh"],
        ),
    ];
    for (mut cmd, needles) in cases {
        let output = run(&mut cmd, Duration::from_secs(20));
        let line = one_line_error(&output);
        for needle in needles {
            assert!(line.contains(needle), "`{needle}` not in: {line}");
        }
    }
    assert!(!out.exists());
}
