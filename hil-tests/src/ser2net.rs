//! A real ser2net (Debian package `ser2net`, 4.x) serving a serial device — here a simulated
//! board's pseudo-terminal — raw over TCP on a free loopback port, the way a remote rig is
//! reached. `scripts/setup.sh` installs the package; a missing ser2net is an error that says
//! so, never a skipped test.
//!
//! ser2net serves a pty like any other tty: it opens the slave path, sets it to the line
//! settings of the config (`115200n81,local`, raw) and copies bytes both ways unchanged
//! (all 256 byte values, `0x00` frame delimiters included). No socat fallback is needed.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::ChildGuard;
use crate::scratch::ScratchDir;

/// The hint every "ser2net is missing" error ends with.
pub const INSTALL_HINT: &str =
    "ser2net is not installed; run scripts/setup.sh (it installs the Debian package ser2net)";

/// A running ser2net; killed and reaped when dropped.
pub struct Ser2net {
    child: ChildGuard,
    port: u16,
    dir: ScratchDir,
}

impl Ser2net {
    /// Starts ser2net in the foreground serving `device` raw on `127.0.0.1:<free port>` and
    /// waits until it listens.
    pub fn serve(device: &Path) -> Result<Self, String> {
        let version = Command::new("ser2net")
            .arg("-v")
            .output()
            .map_err(|e| format!("{INSTALL_HINT} (running `ser2net -v` failed: {e})"))?;
        let version = String::from_utf8_lossy(&version.stdout).to_string()
            + &String::from_utf8_lossy(&version.stderr);
        if !version.contains("version 4.") {
            return Err(format!(
                "ser2net 4.x is needed for its YAML configuration, found `{}`; run scripts/setup.sh",
                version.trim()
            ));
        }
        let port = free_port()?;
        let dir = ScratchDir::new("ser2net");
        let config = dir.join("ser2net.yaml");
        // `local`: ignore modem control lines (a pty has none); no `telnet` in the accepter
        // means raw TCP, the mode tether's `--tcp` speaks.
        let yaml = format!(
            "connection: &tether_rig\n  accepter: tcp,127.0.0.1,{port}\n  connector: serialdev,{},115200n81,local\n  options:\n    kickolduser: true\n",
            device.display()
        );
        std::fs::write(&config, yaml)
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("ser2net.log"))
            .map_err(|e| format!("cannot create the ser2net log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot create the ser2net log: {e}"))?;
        // -n: stay in the foreground (so the guard can kill it); -u: no UUCP lock files
        // (they need write access to /var/lock); -c: only our configuration.
        let child = Command::new("ser2net")
            .args(["-n", "-u", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("{INSTALL_HINT} (spawning it failed: {e})"))?;
        let mut server = Ser2net {
            child: ChildGuard::new(child, "ser2net"),
            port,
            dir,
        };
        server.wait_listening(Duration::from_secs(10))?;
        Ok(server)
    }

    /// `127.0.0.1:<port>`, as `tether train --tcp` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What ser2net printed so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("ser2net.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Whether the ser2net process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Waits until the port is in LISTEN state. Reads `/proc/net/tcp` instead of probing
    /// with a connection, which would open (and close) the device behind it.
    fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let local = format!("0100007F:{:04X}", self.port);
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            let listening = table.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3 && cols[1] == local && cols[3] == "0A"
            });
            if listening {
                return Ok(());
            }
            if !self.child.is_running() {
                return Err(format!("ser2net exited at start: {}", self.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ser2net did not listen on {} within {timeout:?}: {}",
                    self.endpoint(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback TCP port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free TCP port: {e}"))
}
