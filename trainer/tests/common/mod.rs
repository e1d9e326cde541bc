//! Shared helpers of the `tether` binary's tests: the binary itself, scratch folders,
//! children that never outlive a test, a simulated device served by `tether sim`, and one
//! served from the test itself for plants `tether sim` does not have.
//!
//! (The library-level end-to-end tests and their fixtures live in `hil-tests`; these run
//! the binary, which cargo only builds for tests of this package.)

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::{Action, Plant, StepOutcome};
use tether_firmware::sim::{SimBoard, SimConfig, SimHandle};
use tether_shared::PlantDescription;

/// `tether`, with logging at its default level and backtraces on (so a test notices if one
/// ever reaches the user).
pub fn tether() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.env_remove("TETHER_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, killing it (and failing) past `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether");
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + timeout;
    loop {
        let child = guard.0.as_mut().expect("child");
        if child.try_wait().expect("try_wait").is_some() {
            return guard
                .0
                .take()
                .expect("child")
                .wait_with_output()
                .expect("output");
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} took more than {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts `output` is a failure reported as one `error: ...` line, the last thing printed
/// (a banner may come before it), without a backtrace; returns that line.
pub fn one_line_error(output: &Output) -> String {
    let text = stderr(output);
    assert!(
        !output.status.success(),
        "expected a failure, got success: {text}"
    );
    assert_eq!(output.status.code(), Some(1), "exit code: {text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line, got: {text}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("error: "), "the error comes last: {text}");
    for noise in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "Caused by",
        "stack",
    ] {
        assert!(!text.contains(noise), "`{noise}` reached the user: {text}");
    }
    last.to_string()
}

/// Kills (SIGKILL) and reaps its child when dropped.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `tether sim` process and the pty path it printed first.
pub struct SimProcess {
    pub path: String,
    _guard: ChildGuard,
}

impl SimProcess {
    /// Starts `tether sim --plant <plant>` and reads its first stdout line (the pty path).
    pub fn start(plant: &str) -> Self {
        Self::start_with(&["--plant", plant])
    }

    /// Starts `tether sim <args>` and reads its first stdout line (the pty path).
    pub fn start_with(args: &[&str]) -> Self {
        let mut child = tether()
            .arg("sim")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tether sim");
        let stdout = child.stdout.take().expect("stdout");
        let guard = ChildGuard(Some(child));
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the pty path");
        let path = line.trim().to_string();
        assert!(
            path.starts_with("/dev/") && Path::new(&path).exists(),
            "tether sim's first line is a device path: {line:?}"
        );
        SimProcess {
            path,
            _guard: guard,
        }
    }
}

/// A plant model under another name: a device that reports a plant tether has no preset
/// for (a user's own rig), with dynamics the test knows.
pub struct Renamed<P> {
    pub inner: P,
    pub name: &'static str,
}

impl<P: Plant> Plant for Renamed<P> {
    fn description(&self) -> PlantDescription {
        let mut description = self.inner.description();
        description.name.clear();
        description
            .name
            .push_str(self.name)
            .expect("the test's plant name fits");
        description
    }

    fn reset(&mut self, seed: u64) {
        self.inner.reset(seed);
    }

    fn observe(&mut self, obs: &mut [f32]) {
        self.inner.observe(obs);
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        self.inner.actuate(action)
    }

    fn safe_state(&mut self) {
        self.inner.safe_state();
    }
}

/// A simulated device of any plant on a pseudo-terminal, run by this test process in
/// virtual time (as `tether sim` runs one); stopped when dropped.
pub struct PtyDevice {
    pub path: String,
    _board: SimHandle,
}

impl PtyDevice {
    pub fn start<P: Plant + Send + 'static>(plant: P) -> Self {
        let config = SimConfig {
            // Virtual time outruns the host's heartbeats: no watchdog (as `tether sim`).
            device: DeviceConfig {
                watchdog_timeout_us: 0,
                ..DeviceConfig::default()
            },
            ..SimConfig::default()
        };
        let (path, board) = SimBoard::new(plant, config)
            .spawn_pty()
            .expect("a pseudo-terminal");
        PtyDevice {
            path: path.to_string_lossy().into_owned(),
            _board: board,
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh folder under the temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tether-cli-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("TETHER_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
