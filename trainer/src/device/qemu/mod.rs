//! QEMU devices: a board image of the firmware (built by `scripts/cross.sh`) running in
//! `qemu-system-arm`, its UART on a pseudo-terminal the trainer opens like a serial port.
//!
//! The board is `qemu-mps2-an386` (a Cortex-M4F, `firmware/boards/qemu-mps2-an386/`), one
//! image per plant. [`QemuDevice`] owns the QEMU process and never lets it outlive tether:
//!
//! - dropping it kills and reaps QEMU (a run that ends, fails or is stopped by Ctrl-C);
//! - QEMU runs in its own process group, so a Ctrl-C typed in the terminal reaches tether
//!   only (which finishes its iteration with the devices still up) and not the devices;
//! - on Linux QEMU gets `SIGKILL` when tether dies without dropping it (a second Ctrl-C's
//!   immediate exit, `SIGKILL`): the parent-death signal, set in the child before `exec`.
//!
//! [`QemuDevice::spawn`] returns once the board says it serves ([`BoardLine::Serving`]),
//! not after a guessed delay: how long QEMU takes to get there depends on the host's load.

mod board_line;

pub use board_line::{BOARD_PREFIX, BoardLine};

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The board QEMU devices run: the folder name under `firmware/boards/` and under
/// `target/firmware/`, where `scripts/cross.sh` writes `<plant>.elf`.
pub const QEMU_BOARD: &str = "qemu-mps2-an386";

/// The emulator, looked up on `PATH`.
pub const QEMU_PROGRAM: &str = "qemu-system-arm";

/// QEMU's machine for [`QEMU_BOARD`].
const QEMU_MACHINE: &str = "mps2-an386";

/// Instruction-count shift of the real-time mode: each emulated instruction takes 2^4 ns of
/// virtual time, a 62.5 M instructions/s core. That is slower than the Cortex-M4F boards
/// tether targets (100–168 MHz, about one instruction per cycle), so a control loop that
/// keeps its period here keeps it there.
pub const REAL_TIME_ICOUNT_SHIFT: u32 = 4;

/// How long QEMU may take to name its pseudo-terminal and the board to say it serves: a
/// bound for a QEMU that hangs, not a wait (a start returns as soon as both happened;
/// measured 0.01–2.4 s at a load of 10–18 on two cores).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of QEMU's output kept for [`QemuDevice::output`].
const KEPT_LINES: usize = 256;

/// Why a QEMU device cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// `qemu-system-arm` is not on `PATH`.
    #[error(
        "{QEMU_PROGRAM} is not installed (not found on PATH); install it with scripts/setup.sh"
    )]
    NotInstalled,
    /// The current directory is not inside a tether checkout, so the default image path is
    /// unknown.
    #[error(
        "no QEMU image for plant `{plant}`: {} is not inside a tether checkout (images are \
         found at target/firmware/{QEMU_BOARD}/<plant>.elf below the folder holding \
         scripts/cross.sh); run scripts/cross.sh in the checkout and start tether there, or \
         give --firmware <ELF>",
        .cwd.display()
    )]
    NoCheckout {
        /// The plant whose image was looked for.
        plant: String,
        /// The current directory.
        cwd: PathBuf,
    },
    /// The image file does not exist.
    #[error("no QEMU image for plant `{plant}` at {}; build it with scripts/cross.sh", .path.display())]
    NoImage {
        /// The plant.
        plant: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The process could not be started.
    #[error("cannot start {QEMU_PROGRAM}: {0}")]
    Spawn(std::io::Error),
    /// QEMU ended, or did not name its pseudo-terminal or the board did not say it serves
    /// in time.
    #[error("{QEMU_PROGRAM} on {} did not start ({why}){}", .image.display(), tail(.output))]
    Failed {
        /// The image it was asked to run.
        image: PathBuf,
        /// Its exit status, or that it said nothing in time.
        why: String,
        /// Its last lines of output.
        output: Vec<String>,
    },
}

fn tail(output: &[String]) -> String {
    match output.last() {
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

/// The image of `plant`: `firmware` when given, else the one `scripts/cross.sh` writes,
/// `<checkout>/target/firmware/qemu-mps2-an386/<plant>.elf`, where the checkout is the
/// nearest of the current directory and its ancestors that holds `scripts/cross.sh`.
/// Either way the file must exist.
pub fn image_for(plant: &str, firmware: Option<&Path>) -> Result<PathBuf, QemuError> {
    let path = match firmware {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().unwrap_or_default();
            let root = checkout_root(&cwd).ok_or_else(|| QemuError::NoCheckout {
                plant: plant.to_string(),
                cwd: cwd.clone(),
            })?;
            default_image(root, plant)
        }
    };
    if !path.is_file() {
        return Err(QemuError::NoImage {
            plant: plant.to_string(),
            path,
        });
    }
    Ok(path)
}

/// The nearest of `dir` and its ancestors holding `scripts/cross.sh`: a tether checkout.
pub fn checkout_root(dir: &Path) -> Option<&Path> {
    dir.ancestors()
        .find(|d| d.join("scripts").join("cross.sh").is_file())
}

/// Where `scripts/cross.sh` writes `plant`'s image in the checkout at `root`.
pub fn default_image(root: &Path, plant: &str) -> PathBuf {
    root.join("target")
        .join("firmware")
        .join(QEMU_BOARD)
        .join(format!("{plant}.elf"))
}

/// The emulator's path on `PATH`.
pub fn qemu_program() -> Result<PathBuf, QemuError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU_PROGRAM))
        .find(|candidate| candidate.is_file())
        .ok_or(QemuError::NotInstalled)
}

/// How the board keeps time (the board's command-line words, see its `cmdline.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuTiming {
    /// `free`: episodes run as fast as the emulation and the host's reading allow, on a
    /// virtual device clock (as the host build's simulated devices in virtual time). QEMU
    /// runs without `-icount`, at full speed.
    FreeRunning,
    /// `realtime`: the board's SysTick paces the control loop at the plant's rate, under
    /// `-icount shift=`[`REAL_TIME_ICOUNT_SHIFT`]`,align=on`: time is counted in emulated
    /// instructions, so the device's own step times do not depend on the host's load, and
    /// QEMU holds the emulation back to no faster than the host's clock, so the device's
    /// watchdog sees the host's heartbeats at their real rate. (That alignment often holds
    /// the core for about 2 s after start: the board answers its first handshake late.)
    RealTime,
}

/// Additions to a QEMU device's command line beyond what its [`QemuTiming`] sets, for tests
/// and measurements (tether's own devices take none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QemuExtras<'a> {
    /// Further words of the board's semihosting command line, after the timing's word. The
    /// board knows `free`, `realtime` and `bench` (its `cmdline.rs`) and stops, naming the
    /// word, on any other or on two modes.
    pub board_words: &'a [&'a str],
    /// Further QEMU options, after tether's own: e.g. `["-icount", "shift=0"]` (virtual
    /// time counted in instructions) with [`QemuTiming::FreeRunning`]; the real-time mode
    /// sets `-icount` itself, and QEMU refuses a second one.
    pub qemu_options: &'a [&'a str],
}

/// A running QEMU device, killed and reaped when dropped. Its UART is the pseudo-terminal
/// at [`QemuDevice::pty`]; what the board prints (semihosting) and QEMU's own messages are
/// kept ([`QemuDevice::output`]) and logged as warnings under the device's name.
pub struct QemuDevice {
    child: Child,
    pty: PathBuf,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl QemuDevice {
    /// Starts `qemu-system-arm` on `image` and waits until it has named its pseudo-terminal
    /// and the board says it serves; `name` labels its output in the log.
    ///
    /// QEMU is sent `SIGKILL` when the *thread* that started it ends (Linux's parent-death
    /// signal follows the thread): start it from a thread that outlives the device.
    pub fn spawn(image: &Path, timing: QemuTiming, name: &str) -> Result<Self, QemuError> {
        Self::spawn_with(image, timing, QemuExtras::default(), name)
    }

    /// [`QemuDevice::spawn`] with `extras` on the command line.
    pub fn spawn_with(
        image: &Path,
        timing: QemuTiming,
        extras: QemuExtras<'_>,
        name: &str,
    ) -> Result<Self, QemuError> {
        let program = qemu_program()?;
        let mut command = Command::new(program);
        command
            .args(qemu_args(image, timing, extras))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(QemuError::Spawn)?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (events, started) = mpsc::channel();
        let mut readers = Vec::new();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let (output, events, name) = (output.clone(), events.clone(), name.to_string());
            readers.push(std::thread::spawn(move || {
                read_output(stream, &events, &output, &name)
            }));
        }
        drop(events); // the readers hold the senders: all gone means QEMU closed its output
        let mut device = QemuDevice {
            child,
            pty: PathBuf::new(),
            output,
        };
        match wait_for_start(&started) {
            Ok(pty) => {
                device.pty = pty;
                Ok(device)
            }
            Err(why) => Err(device.failed_start(image, why, readers)),
        }
    }

    /// The error of a start that failed with `why`: QEMU's exit status if it ended, and all
    /// its output (read to its end once QEMU is stopped).
    fn failed_start(
        mut self,
        image: &Path,
        why: String,
        readers: Vec<JoinHandle<()>>,
    ) -> QemuError {
        let why = match self.wait_for_exit(Duration::from_millis(500)) {
            Some(status) => format!("it exited with {status}"),
            None => why,
        };
        self.kill();
        for reader in readers {
            let _ = reader.join();
        }
        QemuError::Failed {
            image: image.to_path_buf(),
            why,
            output: self.output(),
        }
    }

    /// The pseudo-terminal of the board's UART, e.g. `/dev/pts/4`.
    pub fn pty(&self) -> &Path {
        &self.pty
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// QEMU's exit status if it has ended on its own (a board panic or fault exits with a
    /// failure status), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines QEMU and the board printed (at most 256), oldest first.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Kills QEMU and waits for it; its exit status if it had already ended on its own.
    pub fn stop(mut self) -> Option<ExitStatus> {
        let ended = self.exit_status();
        self.kill();
        ended
    }

    /// Waits up to `timeout` for QEMU to end on its own; its exit status, `None` if it
    /// still runs.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        // Fails harmlessly when QEMU has already ended; `wait` reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuDevice {
    fn drop(&mut self) {
        self.kill();
    }
}

/// QEMU's command line for `image` (after the program name).
fn qemu_args(image: &Path, timing: QemuTiming, extras: QemuExtras<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-M",
        QEMU_MACHINE,
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "pty",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(image.as_os_str().to_owned());
    let (word, icount) = match timing {
        QemuTiming::FreeRunning => ("free", None),
        QemuTiming::RealTime => (
            "realtime",
            Some(format!("shift={REAL_TIME_ICOUNT_SHIFT},align=on")),
        ),
    };
    let words: Vec<&str> = std::iter::once(word)
        .chain(extras.board_words.iter().copied())
        .collect();
    args.push("-append".into());
    args.push(words.join(" ").into());
    if let Some(icount) = icount {
        args.push("-icount".into());
        args.push(icount.into());
    }
    args.extend(extras.qemu_options.iter().map(OsString::from));
    args
}

/// Arranges for the child to get `SIGKILL` when the thread that spawns it ends.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, raise).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// What QEMU's output tells a start.
enum StartEvent {
    /// QEMU named the pseudo-terminal of the board's UART.
    Pty(PathBuf),
    /// The board said it serves.
    Serving,
}

/// Waits for the pseudo-terminal and the board's [`BoardLine::Serving`]; the path, or why
/// not.
fn wait_for_start(started: &mpsc::Receiver<StartEvent>) -> Result<PathBuf, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let (mut pty, mut serving) = (None, false);
    while pty.is_none() || !serving {
        let left = deadline.saturating_duration_since(Instant::now());
        match started.recv_timeout(left) {
            Ok(StartEvent::Pty(path)) => pty = Some(path),
            Ok(StartEvent::Serving) => serving = true,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("it closed its output".into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let missing = match pty {
                    None => "named no pseudo-terminal",
                    Some(_) => "the board did not say it serves",
                };
                return Err(format!("{missing} within {START_TIMEOUT:?}"));
            }
        }
    }
    pty.ok_or_else(|| "named no pseudo-terminal".into())
}

/// Reads one of QEMU's streams to its end: every line is kept and logged, except that the
/// line naming the pseudo-terminal and the board's [`BoardLine::Serving`] go to `events`
/// instead of the log's warnings.
fn read_output(
    stream: impl Read,
    events: &mpsc::Sender<StartEvent>,
    output: &Mutex<VecDeque<String>>,
    name: &str,
) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if let Some(path) = pty_path(&line) {
            let _ = events.send(StartEvent::Pty(path));
            continue;
        }
        if BoardLine::parse(&line) == Some(BoardLine::Serving) {
            tracing::info!("{name}: {line}");
            let _ = events.send(StartEvent::Serving);
        } else {
            tracing::warn!("{name}: {line}");
        }
        keep(output, line);
    }
}

/// The path in QEMU's `char device redirected to /dev/pts/N (label serial0)`.
fn pty_path(line: &str) -> Option<PathBuf> {
    let rest = line.strip_prefix("char device redirected to ")?;
    let (path, label) = rest.split_once(' ')?;
    label
        .starts_with("(label serial0)")
        .then(|| PathBuf::from(path))
}

fn keep(output: &Mutex<VecDeque<String>>, line: String) {
    if let Ok(mut lines) = output.lock() {
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pty_line_is_recognised() {
        assert_eq!(
            pty_path("char device redirected to /dev/pts/7 (label serial0)"),
            Some(PathBuf::from("/dev/pts/7"))
        );
        assert_eq!(
            pty_path("char device redirected to /dev/pts/8 (label compat_monitor0)"),
            None
        );
        assert_eq!(pty_path("tether board: panicked"), None);
    }

    #[test]
    fn the_command_line_chooses_the_board_mode() {
        let text = |timing| {
            qemu_args(Path::new("/img/qube.elf"), timing, QemuExtras::default())
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let free = text(QemuTiming::FreeRunning);
        assert!(
            free.contains("-M mps2-an386") && free.contains("-serial pty"),
            "{free}"
        );
        assert!(
            free.ends_with("-kernel /img/qube.elf -append free"),
            "{free}"
        );
        assert!(!free.contains("-icount"), "{free}");
        let real = text(QemuTiming::RealTime);
        assert!(
            real.ends_with("-append realtime -icount shift=4,align=on"),
            "{real}"
        );
    }

    #[test]
    fn extras_follow_the_timing_words_and_options() {
        let extras = QemuExtras {
            board_words: &["bench"],
            qemu_options: &["-icount", "shift=0"],
        };
        let image = Path::new("/img/qube.elf");
        let args: Vec<String> = qemu_args(image, QemuTiming::FreeRunning, extras)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args[args.len() - 4..],
            ["-append", "free bench", "-icount", "shift=0"]
        );
    }

    #[test]
    fn images_are_found_in_the_checkout_or_named_with_their_fix() {
        let root = checkout_root(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("a checkout");
        assert!(
            root.join("firmware")
                .join("boards")
                .join(QEMU_BOARD)
                .is_dir()
        );
        assert_eq!(
            default_image(root, "qube"),
            root.join("target/firmware/qemu-mps2-an386/qube.elf")
        );
        assert_eq!(checkout_root(Path::new("/")), None);
        let missing = image_for("pendulum", Some(Path::new("/no/such/pendulum.elf")))
            .expect_err("missing")
            .to_string();
        assert_eq!(
            missing,
            "no QEMU image for plant `pendulum` at /no/such/pendulum.elf; build it with \
             scripts/cross.sh"
        );
        let outside = QemuError::NoCheckout {
            plant: "qube".into(),
            cwd: "/tmp".into(),
        }
        .to_string();
        assert!(
            outside.contains("/tmp is not inside a tether checkout")
                && outside.contains("scripts/cross.sh")
                && outside.contains("--firmware"),
            "{outside}"
        );
    }
}
