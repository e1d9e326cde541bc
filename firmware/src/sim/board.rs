//! The simulated board: runs a [`Device`] with a plant model in its own thread.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use embedded_io::ReadReady;
use tether_shared::frame::MAX_FRAME_LEN;
use tether_shared::message::DeviceState;

use super::BoardLink;
use super::clock::SimClock;
use super::link_emulation::{FaultSpec, LinkEmulation, WireTap};
use super::pipe::{HostEnd, HostWake, memory_link_waking};
use super::pty::PtyLink;
use crate::clock::Clock;
use crate::device::{Device, DeviceConfig};
use crate::gsde::DEFAULT_NOISE_CAPACITY;
use crate::link::{CONTROL_RESERVE, TX_CAPACITY};
use crate::plant::Plant;

/// Policy capacity of a simulated device, in f32 values per buffer (a [256, 256] policy on a
/// 16-value observation fits).
pub const SIM_POLICY_CAPACITY: usize = 72_000;

/// Stack of the board thread: the device and its two policy buffers live on it.
const BOARD_STACK_BYTES: usize = 16 << 20;

/// Outgoing queue (retransmit ring) of a board whose link cannot lose, delay or damage a
/// byte (virtual time, no rate limit, no faults), in bytes: 32 data frames of the largest
/// size, where a device's is four ([`TX_CAPACITY`]).
///
/// In virtual time a board whose ring is full of frames the host has not released waits
/// for the host instead of moving its clock. With four frames in flight that wait came
/// every few dozen control steps, and each cost a wake-up of the host's thread and then of
/// the board's: the boards of a trainer's fleet sat idle about half of the collection's
/// wall time. On such a link nothing is ever resent or evicted, so the ring's size changes
/// only how far the device may run ahead of the host, never what it sends. Any other link
/// keeps the device's own ring, so overruns, evictions and recovery happen as on hardware.
pub const SIM_DEEP_TX_CAPACITY: usize = 32 * MAX_FRAME_LEN + CONTROL_RESERVE;

/// When the host's reader is woken on the in-memory pipe of a board with the deep ring:
/// once eight frames wait (a quarter of the ring, instead of two frames), or after 256
/// device polls (a few hundred control steps of virtual time, well under a millisecond).
/// Each wake-up costs both threads a context switch; the host decodes a frame in less
/// time than the device takes to make one, so larger hand-overs keep both busy with a
/// quarter of the wake-ups.
const DEEP_RING_HOST_WAKE: HostWake = HostWake {
    bytes: 8 * MAX_FRAME_LEN,
    polls: 256,
};

/// How the board's clock runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeMode {
    /// While running episodes, time jumps to the device's next deadline as soon as the
    /// device is done: as fast as the host consumes the data. While idle it follows real
    /// time. When the host's side of the link is full, time stops until the host reads.
    #[default]
    Virtual,
    /// Real time: the board sleeps to the control rate.
    RealTime,
}

/// How to build and run the simulated board.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Virtual or real time.
    pub time: TimeMode,
    /// Link rate limit in baud (`baud / 10` bytes per second each way, on the board clock);
    /// `None`: unlimited.
    pub baud: Option<u32>,
    /// Faults to inject on the link and device resets to carry out.
    pub faults: FaultSpec,
    /// Seed of the fault injector.
    pub seed: u64,
    /// The device's own settings (watchdog, heartbeat).
    pub device: DeviceConfig,
    /// Bytes the in-memory pipe buffers per direction.
    pub pipe_capacity: usize,
    /// Test hook: records every byte the device sends, before fault injection (the
    /// device's own record of its transitions). `None` in normal use.
    pub tx_tap: Option<WireTap>,
}

impl Default for SimConfig {
    /// Virtual time, no rate limit, no faults, default device settings, 64 KiB pipe.
    fn default() -> Self {
        SimConfig {
            time: TimeMode::Virtual,
            baud: None,
            faults: FaultSpec::none(),
            seed: 0,
            device: DeviceConfig::default(),
            pipe_capacity: 64 * 1024,
            tx_tap: None,
        }
    }
}

/// What a board did, returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Control steps taken (all device lifetimes together).
    pub steps: u64,
    /// Episodes ended (all device lifetimes together).
    pub episodes: u32,
    /// Device power cycles carried out.
    pub resets: u32,
    /// Incoming frames the device rejected.
    pub bad_frames: u32,
    /// Board clock at the end, µs.
    pub clock_us: u64,
}

/// A running board; stop it with [`SimHandle::stop`] (dropping it stops it too).
pub struct SimHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SimReport>>,
}

impl SimHandle {
    /// Stops the board and waits for its thread.
    pub fn stop(mut self) -> SimReport {
        self.stop_inner()
    }

    /// Whether the board's thread has ended (it only ends when stopped or on a panic).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn stop_inner(&mut self) -> SimReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A plant model and the settings to run it as a device.
pub struct SimBoard<P> {
    plant: P,
    config: SimConfig,
    /// A virtual clock the plant shares (a HAL-level twin whose world moves with the
    /// device's time); `None`: the board makes its own.
    clock: Option<SimClock>,
}

impl<P: Plant + Send + 'static> SimBoard<P> {
    /// A board for `plant`.
    pub fn new(plant: P, config: SimConfig) -> Self {
        SimBoard {
            plant,
            config,
            clock: None,
        }
    }

    /// Runs the device on `clock` (which must be virtual when [`SimConfig::time`] is
    /// [`TimeMode::Virtual`]) instead of a clock of its own, so a plant built on the same
    /// clock sees the device's time.
    pub fn with_clock(mut self, clock: SimClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs the board over a fresh in-memory pipe; returns the host's end (`std::io::Read +
    /// Write` with a timeout, see [`HostEnd::set_timeout`]).
    pub fn spawn_memory(self) -> (HostEnd, SimHandle) {
        let wake = match self.config.lossless() {
            true => DEEP_RING_HOST_WAKE,
            false => HostWake::default(),
        };
        let (host, device) = memory_link_waking(self.config.pipe_capacity, wake);
        (host, self.spawn_with(device))
    }

    /// Runs the board over a new pseudo-terminal; returns the path a host opens like a
    /// serial port (the baud rate it asks for is ignored; use [`SimConfig::baud`]).
    pub fn spawn_pty(self) -> io::Result<(PathBuf, SimHandle)> {
        let link = PtyLink::open()?;
        let path = link.path().clone();
        Ok((path, self.spawn_with(link)))
    }

    /// Runs the board over any device-side link.
    pub fn spawn_with<L: BoardLink + Send + 'static>(self, link: L) -> SimHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("tether-sim-board".into())
            .stack_size(BOARD_STACK_BYTES)
            .spawn(move || match self.config.lossless() {
                true => run_board::<P, L, SIM_DEEP_TX_CAPACITY>(
                    self.plant,
                    link,
                    self.config,
                    self.clock,
                    &flag,
                ),
                false => {
                    run_board::<P, L, TX_CAPACITY>(self.plant, link, self.config, self.clock, &flag)
                }
            })
            .ok();
        SimHandle { stop, thread }
    }
}

impl SimConfig {
    /// Whether the board's link delivers every byte at once and unchanged: virtual time,
    /// no rate limit, no fault that touches a byte (device resets may still be scheduled).
    fn lossless(&self) -> bool {
        self.time == TimeMode::Virtual && self.baud.is_none() && self.faults.touches_no_byte()
    }
}

/// The simulated device, with an outgoing queue of `TX` bytes.
type SimDevice<P, L, const TX: usize> =
    Device<P, LinkEmulation<L>, SimClock, SIM_POLICY_CAPACITY, DEFAULT_NOISE_CAPACITY, TX>;

fn run_board<P: Plant, L: BoardLink, const TX: usize>(
    plant: P,
    link: L,
    config: SimConfig,
    clock: Option<SimClock>,
    stop: &AtomicBool,
) -> SimReport {
    let clock = clock.unwrap_or_else(|| match config.time {
        TimeMode::Virtual => SimClock::new_virtual(),
        TimeMode::RealTime => SimClock::new_real(),
    });
    let link = LinkEmulation::new(
        link,
        clock.clone(),
        config.baud,
        config.faults.clone(),
        config.seed,
    )
    .with_tap(config.tx_tap.clone());
    // On the board thread's stack (see BOARD_STACK_BYTES).
    let mut device: SimDevice<P, L, TX> = Device::new(plant, link, clock.clone(), config.device);
    let mut resets = config.faults.resets_us.iter().copied().peekable();
    let mut report = SimReport::default();
    let mut virtual_time = VirtualTime::new(clock.clone(), config.device.watchdog_timeout_us);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_us();
        if resets.next_if(|&at| now >= at).is_some() {
            // Power cycle: everything the device knew is lost; plant and wire remain.
            report.add_lifetime(&device);
            report.resets += 1;
            let (plant, link, clock) = device.into_parts();
            device = Device::new(plant, link, clock, config.device);
            crate::fmt::log_reset(now);
        }
        device.poll();
        match config.time {
            TimeMode::RealTime => sleep_until_due(&mut device, &clock),
            TimeMode::Virtual => virtual_time.advance(&mut device),
        }
    }
    report.add_lifetime(&device);
    report.clock_us = clock.now_us();
    report
}

impl SimReport {
    /// Adds the counters of one device lifetime (they restart at each power cycle).
    fn add_lifetime<P: Plant, L: BoardLink, const TX: usize>(
        &mut self,
        device: &SimDevice<P, L, TX>,
    ) {
        let stats = device.stats();
        self.steps += stats.steps;
        self.episodes += stats.episodes;
        self.bad_frames += stats.bad_frames;
    }
}

/// Real time: waits (at most 1 ms) until the device has timed work or the link moves.
fn sleep_until_due<P: Plant, L: BoardLink, const TX: usize>(
    device: &mut SimDevice<P, L, TX>,
    clock: &SimClock,
) {
    let wait = device
        .next_wakeup_us()
        .saturating_sub(clock.now_us())
        .min(1_000);
    if wait != 0 {
        let for_room = device.tx_pending() > 0;
        device
            .link_io_mut()
            .wait(Duration::from_micros(wait), for_room);
    }
}

/// Moves a virtual clock with the device and the host: straight to the device's next
/// deadline while it runs, with real time while it is idle; it stops for a host that is
/// slow to read, and does not let the device's watchdog outrun a host alive in real time.
struct VirtualTime {
    clock: SimClock,
    /// The device's watchdog timeout, µs (0: none).
    watchdog_us: u64,
    /// Bytes the host has sent so far, and when (real and board time) that count last
    /// changed.
    host_bytes: u64,
    host_heard: Instant,
    host_heard_us: u64,
    /// (real, board) time when the device last became idle.
    idle_since: Option<(Instant, u64)>,
}

impl VirtualTime {
    fn new(clock: SimClock, watchdog_us: u64) -> Self {
        VirtualTime {
            host_heard_us: clock.now_us(),
            clock,
            watchdog_us,
            host_bytes: 0,
            host_heard: Instant::now(),
            idle_since: None,
        }
    }

    /// One step of the clock after a device poll (or a wait on the link instead).
    fn advance<P: Plant, L: BoardLink, const TX: usize>(
        &mut self,
        device: &mut SimDevice<P, L, TX>,
    ) {
        self.note_host(device);
        let now = self.clock.now_us();
        let wake = device.next_wakeup_us();
        if device.link_io_mut().read_ready().unwrap_or(false) {
            return; // more host input: handle it before time moves
        }
        let pending = device.tx_pending() > 0 || device.link_io_mut().has_staged_output();
        if pending && device.link_io_mut().host_backpressure() {
            device.link_io_mut().wait(Duration::from_millis(1), true);
            return; // a slow host stops virtual time
        }
        let host_bytes_staged = device.link_io_mut().has_staged_input();
        if device.state() == DeviceState::Running
            && !pending
            && !host_bytes_staged
            && device.awaiting_release()
        {
            // The retransmit ring is full of data the host has not confirmed: a real device
            // would evict some, losing it; in virtual time the clock waits for the host.
            // Not while bytes still wait to move either way (a rate-limited link passes
            // them on as the clock moves, the host's release among them): a link slower
            // than the plant must overrun as it would for real.
            device.link_io_mut().wait(Duration::from_millis(1), false);
            return;
        }
        if device.state() != DeviceState::Running {
            // Nothing to simulate: follow real time, wake on host input.
            let (real, virt) = *self.idle_since.get_or_insert((Instant::now(), now));
            let wait = wake.saturating_sub(now).min(1_000);
            device
                .link_io_mut()
                .wait(Duration::from_micros(wait.max(50)), false);
            self.clock
                .advance_to(virt + real.elapsed().as_micros() as u64);
            return;
        }
        self.idle_since = None;
        let mut target = wake;
        if pending {
            // Rate-limited bytes trickle out: move in small steps.
            target = target.min(now + 1_000);
        }
        if self.outruns_live_host(target) {
            // Virtual time must not outrun a host that is alive in real time.
            device.link_io_mut().wait(Duration::from_millis(1), false);
            return;
        }
        self.clock.advance_to(target.max(now + 1));
    }

    /// Records when the host last sent anything.
    fn note_host<P: Plant, L: BoardLink, const TX: usize>(
        &mut self,
        device: &mut SimDevice<P, L, TX>,
    ) {
        let host_bytes = device.link_io_mut().host_bytes_total();
        if host_bytes != self.host_bytes {
            self.host_bytes = host_bytes;
            self.host_heard = Instant::now();
            self.host_heard_us = self.clock.now_us();
        }
    }

    /// Whether moving to board time `target` would fire the device's watchdog although
    /// the host was heard within the timeout in real time.
    fn outruns_live_host(&self, target: u64) -> bool {
        self.watchdog_us != 0
            && target >= self.host_heard_us + self.watchdog_us
            && self.host_heard.elapsed() < Duration::from_micros(self.watchdog_us)
    }
}
