//! An in-memory duplex byte pipe with bounded capacity: the simulated serial cable.
//!
//! [`memory_link`] returns two ends. The [`DeviceEnd`] speaks the non-blocking `embedded-io`
//! traits the runtime expects; the [`HostEnd`] speaks `std::io::Read + Write` with a read and
//! write timeout, so a host drives it like a serial port (`read` fails with
//! [`io::ErrorKind::TimedOut`] when nothing arrived in time).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};

use tether_shared::frame::MAX_FRAME_LEN;

use super::BoardLink;

/// Default host read/write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// A host reader blocked on an empty pipe is woken once this many device bytes wait for it
/// (more than one frame of the largest size)...
///
/// Waking a thread costs both sides a few microseconds of system time (more on a virtual
/// machine, where it is an interrupt between processors), and a device in virtual time
/// writes a transition frame every few dozen microseconds: a reader woken for every frame
/// cost the trainer's collection more than decoding them. Handing over two frames per
/// wake-up halves that; the device's retransmit ring holds four, so waiting for more would
/// make the device wait for the host's release instead.
const HOST_WAKE_BYTES: usize = MAX_FRAME_LEN + 1;

/// ...or once the device has polled its link this many times since the first of them (a
/// few dozen control steps in virtual time; a clock read per poll would cost more than the
/// wake-ups saved), or as soon as the device's thread is about to block (a device that
/// waits for the host must not keep the host waiting).
const HOST_WAKE_POLLS: u32 = 64;

/// When a host reader blocked on an empty pipe is woken for what the device wrote: once
/// `bytes` wait for it, or once the device has polled its link `polls` times since the first
/// of them, or as soon as the device's thread is about to block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWake {
    /// Device bytes that wake the reader at once.
    pub bytes: usize,
    /// Device polls after which fewer bytes wake it.
    pub polls: u32,
}

impl Default for HostWake {
    /// Two frames of the largest size, or [`HOST_WAKE_POLLS`] polls (sized for a device
    /// whose retransmit ring holds four frames).
    fn default() -> Self {
        HostWake {
            bytes: HOST_WAKE_BYTES,
            polls: HOST_WAKE_POLLS,
        }
    }
}

struct State {
    to_device: VecDeque<u8>,
    to_host: VecDeque<u8>,
    /// Bytes each direction may hold.
    capacity: usize,
    /// Live [`HostEnd`] handles.
    host_ends: usize,
    device_alive: bool,
    /// Bytes the host has written since the pipe was made.
    host_bytes_total: u64,
    /// What the device's thread is blocked waiting for (there is one device end).
    device_waits: DeviceWaits,
    /// Host handles blocked in `read` (for device bytes) and in `write` (for room).
    host_readers_waiting: usize,
    host_writers_waiting: usize,
    /// Device polls since bytes began to wait for a blocked host reader that was not woken
    /// for them (see [`HostWake`]); `None` when no wake-up is put off.
    host_wake_put_off: Option<u32>,
    /// When a blocked host reader is woken.
    host_wake: HostWake,
}

impl State {
    /// After the device wrote: whether to wake a blocked host reader now (enough bytes
    /// wait for it); otherwise the wake-up is put off.
    fn host_reader_due(&mut self) -> bool {
        let due = self.host_readers_waiting > 0 && self.to_host.len() >= self.host_wake.bytes;
        self.host_wake_put_off = match self.host_readers_waiting > 0 && !due {
            true => Some(self.host_wake_put_off.unwrap_or(0)),
            false => None,
        };
        due
    }

    /// At a device poll: whether a put-off wake-up has waited [`HostWake::polls`] polls.
    fn put_off_wake_overdue(&mut self) -> bool {
        let Some(polls) = self.host_wake_put_off.as_mut() else {
            return false;
        };
        *polls += 1;
        let due = *polls >= self.host_wake.polls;
        if due {
            self.host_wake_put_off = None;
        }
        due && self.host_readers_waiting > 0
    }

    /// Before the device blocks: whether a wake-up was put off (it is due now).
    fn take_put_off_wake(&mut self) -> bool {
        self.host_wake_put_off.take().is_some() && self.host_readers_waiting > 0
    }

    /// The count of host threads blocked in `op`.
    fn host_waiting(&mut self, op: HostWait) -> &mut usize {
        match op {
            HostWait::Read => &mut self.host_readers_waiting,
            HostWait::Write => &mut self.host_writers_waiting,
        }
    }
}

/// What the device's thread waits for, so the host wakes it only for that.
#[derive(Clone, Copy, Default)]
struct DeviceWaits {
    input: bool,
    room: bool,
}

/// The pipe's state and one condition variable per side.
///
/// A side is woken only when something it is blocked on changed: std's `Condvar::notify_*`
/// is a `futex` system call whether or not anyone waits, and a control step's worth of
/// bytes crossing the pipe would otherwise cost a few of them (the trainer's collection
/// spent more time in the kernel than in the link). Each waiter records what it waits for
/// in the state, under the lock, before blocking; each change reads those records under
/// the same lock, so no wake-up is lost.
struct Shared {
    state: Mutex<State>,
    /// The device's thread waits here; the host's changes wake it.
    device_side: Condvar,
    /// Host threads wait here; the device's changes wake them.
    host_side: Condvar,
}

/// Which host operation waits.
#[derive(Clone, Copy)]
enum HostWait {
    Read,
    Write,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queues inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks the device's thread until the host changes what `waits` names (first waking
    /// a host reader whose wake-up was put off).
    fn device_wait<'a>(
        &self,
        mut guard: MutexGuard<'a, State>,
        waits: DeviceWaits,
    ) -> MutexGuard<'a, State> {
        if guard.take_put_off_wake() {
            self.host_side.notify_all();
        }
        guard.device_waits = waits;
        let mut guard = self
            .device_side
            .wait(guard)
            .unwrap_or_else(|e| e.into_inner());
        guard.device_waits = DeviceWaits::default();
        guard
    }

    /// [`Shared::device_wait`] until `deadline`; `None` once it has passed.
    fn device_wait_until<'a>(
        &self,
        mut guard: MutexGuard<'a, State>,
        waits: DeviceWaits,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, State>> {
        if guard.take_put_off_wake() {
            self.host_side.notify_all();
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        guard.device_waits = waits;
        let (mut guard, _) = self
            .device_side
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|e| e.into_inner());
        guard.device_waits = DeviceWaits::default();
        Some(guard)
    }

    /// Blocks a host thread in `op` until the device changes something or `deadline`
    /// passes (then `None`).
    fn host_wait<'a>(
        &self,
        mut guard: MutexGuard<'a, State>,
        op: HostWait,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, State>> {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        *guard.host_waiting(op) += 1;
        let (mut guard, _) = self
            .host_side
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|e| e.into_inner());
        *guard.host_waiting(op) -= 1;
        Some(guard)
    }

    /// Unlocks, then wakes the device's thread if `wake`.
    fn wake_device(&self, guard: MutexGuard<'_, State>, wake: bool) {
        drop(guard);
        if wake {
            self.device_side.notify_all();
        }
    }

    /// Unlocks, then wakes the host's waiting threads if `wake`.
    fn wake_host(&self, guard: MutexGuard<'_, State>, wake: bool) {
        drop(guard);
        if wake {
            self.host_side.notify_all();
        }
    }
}

/// Makes a pipe whose directions each buffer up to `capacity` bytes (at least 1).
pub fn memory_link(capacity: usize) -> (HostEnd, DeviceEnd) {
    memory_link_waking(capacity, HostWake::default())
}

/// [`memory_link`], waking a blocked host reader as `wake` says.
pub fn memory_link_waking(capacity: usize, wake: HostWake) -> (HostEnd, DeviceEnd) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            to_device: VecDeque::new(),
            to_host: VecDeque::new(),
            capacity: capacity.max(1),
            host_ends: 1,
            device_alive: true,
            host_bytes_total: 0,
            device_waits: DeviceWaits::default(),
            host_readers_waiting: 0,
            host_writers_waiting: 0,
            host_wake_put_off: None,
            host_wake: wake,
        }),
        device_side: Condvar::new(),
        host_side: Condvar::new(),
    });
    (
        HostEnd {
            shared: shared.clone(),
            timeout: DEFAULT_TIMEOUT,
        },
        DeviceEnd { shared },
    )
}

/// The host's end of a [`memory_link`]: blocking `std::io` with a timeout.
pub struct HostEnd {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl HostEnd {
    /// Sets how long `read` waits for a byte and `write` for room before failing with
    /// [`io::ErrorKind::TimedOut`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The current timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Another handle on the same end (e.g. one thread reads while another writes).
    pub fn try_clone(&self) -> io::Result<HostEnd> {
        self.shared.lock().host_ends += 1;
        Ok(HostEnd {
            shared: self.shared.clone(),
            timeout: self.timeout,
        })
    }
}

impl Drop for HostEnd {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.host_ends -= 1;
        let wake = state.device_waits.input || state.device_waits.room;
        self.shared.wake_device(state, wake);
    }
}

impl io::Read for HostEnd {
    /// Waits up to the timeout for at least one byte. `Ok(0)` means the device end is gone
    /// and everything it sent has been read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + self.timeout;
        let mut state = self.shared.lock();
        loop {
            if !state.to_host.is_empty() {
                let n = buf.len().min(state.to_host.len());
                for (slot, byte) in buf.iter_mut().zip(state.to_host.drain(..n)) {
                    *slot = byte;
                }
                state.host_wake_put_off = None;
                let wake = state.device_waits.room;
                self.shared.wake_device(state, wake);
                return Ok(n);
            }
            if !state.device_alive {
                return Ok(0);
            }
            state = self
                .shared
                .host_wait(state, HostWait::Read, deadline)
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no data from device"))?;
        }
    }
}

impl io::Write for HostEnd {
    /// Waits up to the timeout for room, then writes as much as fits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + self.timeout;
        let mut state = self.shared.lock();
        loop {
            if !state.device_alive {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "simulated device is gone",
                ));
            }
            let room = state.capacity.saturating_sub(state.to_device.len());
            if room > 0 {
                let n = room.min(buf.len());
                state.to_device.extend(&buf[..n]);
                state.host_bytes_total += n as u64;
                let wake = state.device_waits.input;
                self.shared.wake_device(state, wake);
                return Ok(n);
            }
            state = self
                .shared
                .host_wait(state, HostWait::Write, deadline)
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "device not reading"))?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The device's end of a [`memory_link`]: `embedded-io`, used without blocking.
pub struct DeviceEnd {
    shared: Arc<Shared>,
}

impl Drop for DeviceEnd {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.device_alive = false;
        let wake = state.host_readers_waiting + state.host_writers_waiting > 0;
        self.shared.wake_host(state, wake);
    }
}

impl ErrorType for DeviceEnd {
    type Error = ErrorKind;
}

impl Read for DeviceEnd {
    /// Blocks until a byte is there (check [`ReadReady::read_ready`] first to never block);
    /// `Ok(0)` once every host handle is dropped and nothing is left.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.shared.lock();
        loop {
            if !state.to_device.is_empty() {
                let n = buf.len().min(state.to_device.len());
                for (slot, byte) in buf.iter_mut().zip(state.to_device.drain(..n)) {
                    *slot = byte;
                }
                let wake = state.host_writers_waiting > 0;
                self.shared.wake_host(state, wake);
                return Ok(n);
            }
            if state.host_ends == 0 {
                return Ok(0);
            }
            let input = DeviceWaits {
                input: true,
                room: false,
            };
            state = self.shared.device_wait(state, input);
        }
    }
}

impl ReadReady for DeviceEnd {
    /// Also wakes a host reader whose wake-up was put off for [`HostWake::polls`] polls.
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        let mut state = self.shared.lock();
        let ready = !state.to_device.is_empty();
        let wake = state.put_off_wake_overdue();
        self.shared.wake_host(state, wake);
        Ok(ready)
    }
}

impl Write for DeviceEnd {
    /// Writes what fits, blocking only while the pipe is completely full (check
    /// [`WriteReady::write_ready`] first to never block). With no host attached the bytes
    /// are discarded, as on a serial line nobody listens to.
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.shared.lock();
        loop {
            if state.host_ends == 0 {
                return Ok(buf.len());
            }
            let room = state.capacity.saturating_sub(state.to_host.len());
            if room > 0 {
                let n = room.min(buf.len());
                state.to_host.extend(&buf[..n]);
                let wake = state.host_reader_due();
                self.shared.wake_host(state, wake);
                return Ok(n);
            }
            let room = DeviceWaits {
                input: false,
                room: true,
            };
            state = self.shared.device_wait(state, room);
        }
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl WriteReady for DeviceEnd {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        let state = self.shared.lock();
        Ok(state.host_ends == 0 || state.to_host.len() < state.capacity)
    }
}

impl BoardLink for DeviceEnd {
    fn host_backpressure(&mut self) -> bool {
        let state = self.shared.lock();
        state.host_ends > 0 && state.to_host.len() >= state.capacity
    }

    fn host_bytes_total(&mut self) -> u64 {
        self.shared.lock().host_bytes_total
    }

    fn wait(&mut self, timeout: Duration, for_room: bool) {
        let deadline = Instant::now() + timeout;
        let waits = DeviceWaits {
            input: true,
            room: for_room,
        };
        let mut state = self.shared.lock();
        while state.to_device.is_empty() && !(for_room && state.to_host.len() < state.capacity) {
            match self.shared.device_wait_until(state, waits, deadline) {
                Some(s) => state = s,
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn bytes_flow_both_ways_and_reads_time_out() {
        let (mut host, mut dev) = memory_link(8);
        host.set_timeout(Duration::from_millis(5));
        assert_eq!(host.write(b"hello").unwrap(), 5);
        assert!(dev.read_ready().unwrap());
        let mut buf = [0u8; 16];
        assert_eq!(Read::read(&mut dev, &mut buf).unwrap(), 5);
        assert!(!dev.read_ready().unwrap());
        assert_eq!(Write::write(&mut dev, b"0123456789").unwrap(), 8, "bounded");
        assert!(!dev.write_ready().unwrap());
        assert!(dev.host_backpressure());
        assert_eq!(host.read(&mut buf).unwrap(), 8);
        let err = host.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(dev.host_bytes_total(), 5);
    }

    /// A host reader blocked on an empty pipe gets a small write once the device has
    /// polled its link enough times, or at once when the device is about to wait; a large
    /// one at once.
    #[test]
    fn a_blocked_host_reader_is_woken_for_what_the_device_wrote() {
        let (host, mut dev) = memory_link(1 << 16);
        let reader = |mut host: HostEnd| {
            std::thread::spawn(move || {
                host.set_timeout(Duration::from_secs(20));
                let mut buf = [0u8; 4096];
                let started = Instant::now();
                let n = io::Read::read(&mut host, &mut buf).expect("bytes before the timeout");
                (n, started.elapsed(), host)
            })
        };
        let until_blocked = |dev: &mut DeviceEnd| {
            while dev.shared.lock().host_readers_waiting == 0 {
                std::thread::yield_now();
            }
        };
        let quick = Duration::from_secs(5);

        let waiting = reader(host);
        until_blocked(&mut dev);
        assert_eq!(Write::write(&mut dev, b"ack").unwrap(), 3);
        for _ in 0..HOST_WAKE_POLLS {
            assert!(!dev.read_ready().unwrap());
        }
        let (n, took, host) = waiting.join().unwrap();
        assert!(n == 3 && took < quick, "{n} bytes after {took:?}");

        let waiting = reader(host);
        until_blocked(&mut dev);
        assert_eq!(Write::write(&mut dev, b"ack").unwrap(), 3);
        dev.wait(Duration::from_millis(1), false);
        let (n, took, host) = waiting.join().unwrap();
        assert!(n == 3 && took < quick, "{n} bytes after {took:?}");

        let waiting = reader(host);
        until_blocked(&mut dev);
        let frames = [7u8; HOST_WAKE_BYTES];
        assert_eq!(Write::write(&mut dev, &frames).unwrap(), HOST_WAKE_BYTES);
        let (n, took, _host) = waiting.join().unwrap();
        assert!(
            n == HOST_WAKE_BYTES && took < quick,
            "{n} bytes after {took:?}"
        );
    }

    /// With a larger [`HostWake`], what would have woken the default reader does not; the
    /// threshold (or the device blocking) does.
    #[test]
    fn a_larger_host_wake_puts_the_reader_off_until_its_threshold() {
        let wake = HostWake {
            bytes: 4 * HOST_WAKE_BYTES,
            polls: u32::MAX,
        };
        let (mut host, mut dev) = memory_link_waking(1 << 16, wake);
        host.set_timeout(Duration::from_secs(20));
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1 << 16];
            io::Read::read(&mut host, &mut buf).expect("bytes before the timeout")
        });
        while dev.shared.lock().host_readers_waiting == 0 {
            std::thread::yield_now();
        }
        let frames = [7u8; HOST_WAKE_BYTES];
        assert_eq!(Write::write(&mut dev, &frames).unwrap(), HOST_WAKE_BYTES);
        for _ in 0..2 * HOST_WAKE_POLLS {
            assert!(!dev.read_ready().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "woken below the threshold");
        let more = [7u8; 3 * HOST_WAKE_BYTES];
        assert_eq!(Write::write(&mut dev, &more).unwrap(), more.len());
        assert_eq!(reader.join().unwrap(), 4 * HOST_WAKE_BYTES);
    }

    /// The device's wait ends when the host writes, and (waiting for room) when the host
    /// reads from a full pipe; a wait for input only lasts its timeout through host reads.
    #[test]
    fn the_device_is_woken_for_what_it_waits_for() {
        let (host, mut dev) = memory_link(4);
        let long = Duration::from_secs(20);
        let quick = Duration::from_secs(5);
        let after = |delay: Duration, action: fn(&mut HostEnd), mut host: HostEnd| {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                action(&mut host);
                host
            })
        };

        let started = Instant::now();
        let writer = after(
            Duration::from_millis(20),
            |h| assert_eq!(io::Write::write(h, b"x").unwrap(), 1),
            host,
        );
        dev.wait(long, false);
        assert!(started.elapsed() < quick && dev.read_ready().unwrap());
        let host = writer.join().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(Read::read(&mut dev, &mut buf).unwrap(), 1);

        assert_eq!(Write::write(&mut dev, b"full").unwrap(), 4);
        let started = Instant::now();
        let reader = after(
            Duration::from_millis(20),
            |h| assert_eq!(io::Read::read(h, &mut [0u8; 8]).unwrap(), 4),
            host,
        );
        dev.wait(long, true);
        assert!(started.elapsed() < quick && dev.write_ready().unwrap());
        let host = reader.join().unwrap();

        assert_eq!(Write::write(&mut dev, b"more").unwrap(), 4);
        let reader = after(
            Duration::from_millis(5),
            |h| assert_eq!(io::Read::read(h, &mut [0u8; 8]).unwrap(), 4),
            host,
        );
        let started = Instant::now();
        dev.wait(Duration::from_millis(200), false);
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(reader.join().unwrap());
    }

    #[test]
    fn dropping_an_end_is_seen_by_the_other() {
        let (mut host, dev) = memory_link(8);
        drop(dev);
        let mut buf = [0u8; 4];
        assert_eq!(host.read(&mut buf).unwrap(), 0);
        assert_eq!(
            host.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let (host, mut dev) = memory_link(8);
        drop(host);
        assert_eq!(Write::write(&mut dev, b"lost").unwrap(), 4);
        assert_eq!(Read::read(&mut dev, &mut buf).unwrap(), 0);
    }
}
