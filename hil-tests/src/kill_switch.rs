//! Killing a simulated device at a chosen point of its traffic.
//!
//! [`spawn_pty_with_kill_switch`] runs a board over a pseudo-terminal through a
//! [`KillableLink`]. Once [armed](KillSwitch::arm_after), the link counts the bytes the
//! device sends and, when the count is reached, closes the pty for good: the host's serial
//! port goes dead as when a USB device loses power, in the middle of whatever it was
//! streaming. The dead board then idles (it sees a link that never has room) until its
//! handle is stopped.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use tether_firmware::plant::Plant;
use tether_firmware::sim::{BoardLink, PtyLink, SimBoard, SimHandle};

#[derive(Default)]
struct Shared {
    /// Bytes the device has sent.
    sent: AtomicU64,
    /// Kill once `sent` reaches this (u64::MAX: never).
    kill_at: AtomicU64,
    killed: AtomicBool,
}

/// The test's side of a [`KillableLink`].
#[derive(Clone)]
pub struct KillSwitch(Arc<Shared>);

impl KillSwitch {
    /// Kills the device once it has sent `bytes` more bytes from now on.
    pub fn arm_after(&self, bytes: u64) {
        let now = self.0.sent.load(Ordering::SeqCst);
        self.0.kill_at.store(now + bytes, Ordering::SeqCst);
    }

    /// Bytes the device has sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.0.sent.load(Ordering::SeqCst)
    }

    /// Whether the device has been killed.
    pub fn killed(&self) -> bool {
        self.0.killed.load(Ordering::SeqCst)
    }
}

/// A device-side pty link that dies when its [`KillSwitch`] says so.
pub struct KillableLink {
    inner: Option<PtyLink>,
    shared: Arc<Shared>,
}

impl KillableLink {
    fn live(&mut self) -> Result<&mut PtyLink, ErrorKind> {
        self.inner.as_mut().ok_or(ErrorKind::NotConnected)
    }
}

impl ErrorType for KillableLink {
    type Error = ErrorKind;
}

impl Read for KillableLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        self.live()?.read(buf)
    }
}

impl ReadReady for KillableLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(self
            .inner
            .as_mut()
            .is_some_and(|l| l.read_ready().unwrap_or(false)))
    }
}

impl Write for KillableLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let sent = self.shared.sent.load(Ordering::SeqCst);
        let kill_at = self.shared.kill_at.load(Ordering::SeqCst);
        if sent >= kill_at && self.inner.is_some() {
            // Closing the pty master (and the board's own slave descriptor) kills the port.
            self.inner = None;
            self.shared.killed.store(true, Ordering::SeqCst);
        }
        // Never write past the kill point, so it lands exactly where it was armed.
        let room = usize::try_from(kill_at.saturating_sub(sent)).unwrap_or(usize::MAX);
        let n = self.live()?.write(&buf[..buf.len().min(room)])?;
        self.shared.sent.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        self.live()?.flush()
    }
}

impl WriteReady for KillableLink {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(self
            .inner
            .as_mut()
            .is_some_and(|l| l.write_ready().unwrap_or(false)))
    }
}

impl BoardLink for KillableLink {
    fn host_backpressure(&mut self) -> bool {
        // A dead link never has room: the board waits instead of spinning.
        self.inner.as_mut().is_none_or(|l| l.host_backpressure())
    }

    fn host_bytes_total(&mut self) -> u64 {
        self.inner.as_mut().map_or(0, |l| l.host_bytes_total())
    }

    fn wait(&mut self, timeout: Duration, for_room: bool) {
        match self.inner.as_mut() {
            Some(l) => l.wait(timeout, for_room),
            None => std::thread::sleep(timeout),
        }
    }

    fn has_staged_output(&self) -> bool {
        self.inner.as_ref().is_some_and(|l| l.has_staged_output())
    }
}

/// Runs `board` on a new pty behind a kill switch; returns the pty's path (for the host to
/// open like a serial port), the board's handle and the switch.
pub fn spawn_pty_with_kill_switch<P: Plant + Send + 'static>(
    board: SimBoard<P>,
) -> io::Result<(PathBuf, SimHandle, KillSwitch)> {
    let link = PtyLink::open()?;
    let path = link.path().clone();
    let shared = Arc::new(Shared {
        kill_at: AtomicU64::new(u64::MAX),
        ..Shared::default()
    });
    let handle = board.spawn_with(KillableLink {
        inner: Some(link),
        shared: shared.clone(),
    });
    Ok((path, handle, KillSwitch(shared)))
}
