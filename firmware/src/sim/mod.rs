//! The simulated board (feature `sim`, std): a [`Device`](crate::Device) with a plant model,
//! on the host, over an in-memory pipe or a pseudo-terminal, in virtual or real time, with
//! optional link emulation (rate limit and fault injection).
//!
//! ```no_run
//! # fn demo<P: tether_firmware::plant::Plant + Send + 'static>(plant: P) {
//! use tether_firmware::sim::{SimBoard, SimConfig};
//! let board = SimBoard::new(plant, SimConfig::default());
//! let (host_end, handle) = board.spawn_memory(); // std::io::Read + Write, with a timeout
//! // ... drive `host_end` like a serial port ...
//! let report = handle.stop();
//! # let _ = (host_end, report);
//! # }
//! ```

use std::time::Duration;

use embedded_io::{Read, ReadReady, Write, WriteReady};

mod board;
mod clock;
pub mod link_emulation;
pub mod pipe;
pub mod pty;

pub use board::{
    SIM_DEEP_TX_CAPACITY, SIM_POLICY_CAPACITY, SimBoard, SimConfig, SimHandle, SimReport, TimeMode,
};
pub use clock::SimClock;
pub use link_emulation::{FaultSpec, FaultSpecError, LinkEmulation, Stall, WireTap};
pub use pipe::{DeviceEnd, HostEnd, HostWake, memory_link, memory_link_waking};
pub use pty::PtyLink;

/// A device-side byte link the simulated board can run a device over: the runtime's
/// non-blocking `embedded-io` traits plus what the board needs to pace virtual time.
pub trait BoardLink: Read + ReadReady + Write + WriteReady {
    /// Whether the *host* is not keeping up: its side of the link is full. In virtual time
    /// the board then waits instead of advancing the clock (a slow host is not a link limit).
    fn host_backpressure(&mut self) -> bool;

    /// Bytes received from the host since the link was made (host activity, for pacing the
    /// watchdog in virtual time).
    fn host_bytes_total(&mut self) -> u64;

    /// Blocks up to `timeout` until host bytes arrive (or, with `for_room`, until the host
    /// side has room again).
    fn wait(&mut self, timeout: Duration, for_room: bool);

    /// Whether the link holds device bytes it has not passed on yet (link emulation).
    fn has_staged_output(&self) -> bool {
        false
    }

    /// Whether the link holds host bytes it has not passed on yet (link emulation: a
    /// rate-limited link delivers them as the board clock moves).
    fn has_staged_input(&self) -> bool {
        false
    }
}
