//! A pseudo-terminal link: the device drives the pty master, the host opens the slave's
//! path (e.g. `/dev/pts/5`) exactly like a USB serial port such as `/dev/ttyACM0`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use serialport::{SerialPort, TTYPort};

use super::BoardLink;

/// The device side of a pty pair, as non-blocking `embedded-io`.
///
/// Holds the slave open too, so the master keeps working while no host has the path open
/// (a pty master reads EIO once every slave descriptor is closed).
pub struct PtyLink {
    master: TTYPort,
    _slave: TTYPort,
    path: PathBuf,
    bytes_in: u64,
}

impl PtyLink {
    /// Opens a new pty pair. Its slave is in raw mode (no echo, no line editing, no CR/LF
    /// translation), as `TTYPort::pair` configures it.
    pub fn open() -> io::Result<Self> {
        let (mut master, slave) = TTYPort::pair().map_err(io::Error::from)?;
        let path = slave
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("pty slave has no path"))?;
        master
            .set_timeout(Duration::ZERO)
            .map_err(io::Error::from)?;
        Ok(PtyLink {
            master,
            _slave: slave,
            path,
            bytes_in: 0,
        })
    }

    /// Path of the slave device, for the host to open.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    fn poll(&self, events: libc::c_short, timeout: Duration) -> Result<bool, ErrorKind> {
        poll_fd(self.master.as_raw_fd(), events, timeout)
    }
}

/// `poll(2)` on one descriptor; whether one of `events` is signalled.
fn poll_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> Result<bool, ErrorKind> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid, exclusively borrowed pollfd and the count is 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    match r {
        0 => Ok(false),
        r if r > 0 => Ok(pfd.revents & events != 0),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(ErrorKind::Other)
            }
        }
    }
}

impl ErrorType for PtyLink {
    type Error = ErrorKind;
}

impl ReadReady for PtyLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        self.poll(libc::POLLIN, Duration::ZERO)
    }
}

impl Read for PtyLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        match io::Read::read(&mut self.master, buf) {
            Ok(n) => {
                self.bytes_in += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e.kind().into()),
        }
    }
}

impl WriteReady for PtyLink {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        self.poll(libc::POLLOUT, Duration::ZERO)
    }
}

impl Write for PtyLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        match io::Write::write(&mut self.master, buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e.kind().into()),
        }
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl BoardLink for PtyLink {
    fn host_backpressure(&mut self) -> bool {
        !self.poll(libc::POLLOUT, Duration::ZERO).unwrap_or(true)
    }

    fn host_bytes_total(&mut self) -> u64 {
        self.bytes_in
    }

    fn wait(&mut self, timeout: Duration, for_room: bool) {
        let events = if for_room {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        };
        let _ = self.poll(events, timeout);
    }
}
