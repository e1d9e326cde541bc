//! QEMU devices: a Cortex-M board image (built by `scripts/cross.sh`) running in
//! `qemu-system-arm`, its UART on a pseudo-terminal that a test opens like a serial port.
//!
//! The child is killed and reaped when the [`QemuDevice`] drops (also when the test
//! panics). What QEMU prints (its pty announcement, semihosting messages such as a board's
//! panic report) is collected and shown in failures.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::child::ChildGuard;

/// The board the QEMU machine `mps2-an386` runs.
pub const BOARD: &str = "qemu-mps2-an386";

/// How long QEMU gets to announce its pseudo-terminal.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where `scripts/cross.sh` writes `plant`'s image for `board`.
pub fn image_path(board: &str, plant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/firmware")
        .join(board)
        .join(format!("{plant}.elf"))
}

/// A board image running in QEMU with its UART on a pseudo-terminal.
pub struct QemuDevice {
    child: ChildGuard,
    pty: PathBuf,
    output: Arc<Mutex<String>>,
}

impl QemuDevice {
    /// Starts `plant`'s image of the mps2-an386 board with the semihosting command line
    /// `words` (e.g. `["realtime"]`; none: free-running) and waits for its pty.
    ///
    /// A missing image or QEMU is an error naming the command that fixes it.
    pub fn start(plant: &str, words: &[&str]) -> Result<QemuDevice, String> {
        Self::start_with(plant, words, &[])
    }

    /// Like [`QemuDevice::start`] with extra QEMU options, e.g. `["-icount", "shift=0"]`
    /// for virtual time that does not depend on the host's load.
    pub fn start_with(
        plant: &str,
        words: &[&str],
        qemu_options: &[&str],
    ) -> Result<QemuDevice, String> {
        let image = image_path(BOARD, plant);
        if !image.is_file() {
            return Err(format!(
                "no firmware image at {}: run scripts/cross.sh (scripts/test.sh does)",
                image.display()
            ));
        }
        let mut command = Command::new("qemu-system-arm");
        command
            .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
            .args([
                "-serial",
                "pty",
                "-semihosting-config",
                "enable=on,target=native",
            ])
            .arg("-kernel")
            .arg(&image)
            .args(["-append", &words.join(" ")])
            .args(qemu_options)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            format!("cannot run qemu-system-arm ({e}): run scripts/setup.sh to install it")
        })?;
        let output = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().ok_or("no stdout pipe")?),
            Box::new(child.stderr.take().ok_or("no stderr pipe")?),
        ];
        for stream in streams {
            let (output, lines_tx) = (output.clone(), lines_tx.clone());
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut all) = output.lock() {
                        all.push_str(&line);
                        all.push('\n');
                    }
                    let _ = lines_tx.send(line);
                }
            });
        }
        let mut child = ChildGuard::new(child, format!("qemu {plant}"));
        let pty = wait_for_pty(&mut child, &lines).map_err(|e| {
            let all = output.lock().map(|o| o.clone()).unwrap_or_default();
            format!("{e}; QEMU said:\n{all}")
        })?;
        Ok(QemuDevice { child, pty, output })
    }

    /// The pseudo-terminal the board's UART is connected to.
    pub fn pty(&self) -> &Path {
        &self.pty
    }

    /// Everything QEMU printed so far (its own messages and the board's semihosting output).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Whether QEMU still runs (a board that panicked makes it exit).
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}

/// Reads QEMU's output until it names the pty (`char device redirected to /dev/pts/N`).
fn wait_for_pty(child: &mut ChildGuard, lines: &Receiver<String>) -> Result<PathBuf, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(path) = line
                    .split_whitespace()
                    .find(|word| word.starts_with("/dev/pts/"))
                {
                    return Ok(PathBuf::from(path));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !child.is_running() {
                    return Err("QEMU exited before opening its pty".into());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("QEMU closed its output before naming its pty".into());
            }
        }
    }
    Err(format!("QEMU named no pty within {START_TIMEOUT:?}"))
}
