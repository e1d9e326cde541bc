//! The simulated board: runs a [`Device`] with a plant model in its own thread.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use embedded_io::ReadReady;
use tether_shared::message::DeviceState;

use super::BoardLink;
use super::clock::SimClock;
use super::link_emulation::{FaultSpec, LinkEmulation, WireTap};
use super::pipe::{HostEnd, memory_link};
use super::pty::PtyLink;
use crate::clock::Clock;
use crate::device::{Device, DeviceConfig};
use crate::plant::Plant;

/// Policy capacity of a simulated device, in f32 values per buffer (a [256, 256] policy on a
/// 16-value observation fits).
pub const SIM_POLICY_CAPACITY: usize = 72_000;

/// Stack of the board thread: the device and its two policy buffers live on it.
const BOARD_STACK_BYTES: usize = 16 << 20;

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
}

impl<P: Plant + Send + 'static> SimBoard<P> {
    /// A board for `plant`.
    pub fn new(plant: P, config: SimConfig) -> Self {
        SimBoard { plant, config }
    }

    /// Runs the board over a fresh in-memory pipe; returns the host's end (`std::io::Read +
    /// Write` with a timeout, see [`HostEnd::set_timeout`]).
    pub fn spawn_memory(self) -> (HostEnd, SimHandle) {
        let (host, device) = memory_link(self.config.pipe_capacity);
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
            .spawn(move || run_board(self.plant, link, self.config, &flag))
            .ok();
        SimHandle { stop, thread }
    }
}

type SimDevice<P, L> = Device<P, LinkEmulation<L>, SimClock, SIM_POLICY_CAPACITY>;

fn run_board<P: Plant, L: BoardLink>(
    plant: P,
    link: L,
    config: SimConfig,
    stop: &AtomicBool,
) -> SimReport {
    let clock = match config.time {
        TimeMode::Virtual => SimClock::new_virtual(),
        TimeMode::RealTime => SimClock::new_real(),
    };
    let link = LinkEmulation::new(
        link,
        clock.clone(),
        config.baud,
        config.faults.clone(),
        config.seed,
    )
    .with_tap(config.tx_tap.clone());
    // On the board thread's stack (see BOARD_STACK_BYTES).
    let mut device: SimDevice<P, L> = Device::new(plant, link, clock.clone(), config.device);
    let mut resets = config.faults.resets_us.iter().copied().peekable();
    let mut report = SimReport::default();
    let mut last_host_bytes = 0u64;
    let mut last_host_real = Instant::now();
    let mut last_host_virtual = clock.now_us();
    let watchdog = Duration::from_micros(config.device.watchdog_timeout_us);
    // (real, virtual) time when the device last became idle in virtual mode.
    let mut idle_since: Option<(Instant, u64)> = None;

    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_us();
        if resets.next_if(|&at| now >= at).is_some() {
            // Power cycle: everything the device knew is lost; plant and wire remain.
            let stats = device.stats();
            report.steps += stats.steps;
            report.episodes += stats.episodes;
            report.bad_frames += stats.bad_frames;
            report.resets += 1;
            let (plant, link, clock) = device.into_parts();
            device = Device::new(plant, link, clock, config.device);
            crate::fmt::log_reset(now);
        }

        device.poll();

        let host_bytes = device.link_io_mut().host_bytes_total();
        if host_bytes != last_host_bytes {
            last_host_bytes = host_bytes;
            last_host_real = Instant::now();
            last_host_virtual = clock.now_us();
        }

        let now = clock.now_us();
        let wake = device.next_wakeup_us();
        match config.time {
            TimeMode::RealTime => {
                let wait = Duration::from_micros(wake.saturating_sub(now).min(1_000));
                if !wait.is_zero() {
                    let for_room = device.tx_pending() > 0;
                    device.link_io_mut().wait(wait, for_room);
                }
            }
            TimeMode::Virtual => {
                let io = device.link_io_mut();
                if io.read_ready().unwrap_or(false) {
                    continue; // more host input: handle it before time moves
                }
                let pending = device.tx_pending() > 0 || device.link_io_mut().has_staged_output();
                if pending && device.link_io_mut().host_backpressure() {
                    device.link_io_mut().wait(Duration::from_millis(1), true);
                    continue; // a slow host stops virtual time
                }
                if device.state() != DeviceState::Running {
                    // Nothing to simulate: follow real time, wake on host input.
                    let (real, virt) = *idle_since.get_or_insert((Instant::now(), now));
                    let wait = wake.saturating_sub(now).min(1_000);
                    device
                        .link_io_mut()
                        .wait(Duration::from_micros(wait.max(50)), false);
                    clock.advance_to(virt + real.elapsed().as_micros() as u64);
                    continue;
                }
                idle_since = None;
                let mut target = wake;
                if pending {
                    // Rate-limited bytes trickle out: move in small steps.
                    target = target.min(now + 1_000);
                }
                if !watchdog.is_zero()
                    && target >= last_host_virtual + config.device.watchdog_timeout_us
                    && last_host_real.elapsed() < watchdog
                {
                    // Virtual time must not outrun a host that is alive in real time.
                    device.link_io_mut().wait(Duration::from_millis(1), false);
                    continue;
                }
                clock.advance_to(target.max(now + 1));
            }
        }
    }
    let stats = device.stats();
    report.steps += stats.steps;
    report.episodes += stats.episodes;
    report.bad_frames += stats.bad_frames;
    report.clock_us = clock.now_us();
    report
}
