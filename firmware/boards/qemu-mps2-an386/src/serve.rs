//! Serving a host over UART0: the board's main loop around `Device::poll`.
//!
//! Two ways to keep time (chosen on the command line, see [`crate::cmdline`]):
//!
//! - **real time**: the device's clock is SysTick, so the control loop runs at the plant's
//!   rate (under QEMU, in emulated time: with `-icount` that is virtual time that does not
//!   depend on the host's load). The watchdog is on, as on a real rig.
//! - **free-running** (the default): the device's clock is virtual and jumps to its next
//!   deadline as soon as the device has nothing left to do, so episodes run as fast as the
//!   emulation and the host's reading allow, as the host's simulated devices do in virtual
//!   time. While the device is idle the clock follows SysTick; while the host has not read
//!   what was sent (the UART is full), or has not released the data the retransmit ring
//!   keeps, time stops. The watchdog is off: a device's seconds
//!   pass far faster than the host's, and the host detects a silent device by its own
//!   clock.
//!
//! On the host's stderr (semihosting) the board says when it starts serving (`tether board:
//! serving free-running` or `… serving in real time`: a host that started QEMU knows the
//! board reads its UART from then on), and, since the device answers nothing to a host
//! frame it cannot read (it counts it and the host retries), how many it has refused
//! whenever that count grows: `tether board: <n> bad frames from the host`.

use cortex_m_semihosting::heprintln;
use embedded_io::{Read, ReadReady, Write, WriteReady};
use tether_firmware::plant::Plant;
use tether_firmware::{Clock, Device, DeviceConfig};
use tether_shared::message::DeviceState;

use crate::clock::{BoardClock, TimeSource};
use crate::link::BoardLink;
use crate::uart::CmsdkUart;
use crate::{BoardDevice, NOISE_CAPACITY, POLICY_CAPACITY, systick};

/// Runs `plant` as a device on `uart` forever.
#[inline(never)]
pub fn serve<P: Plant>(plant: P, uart: CmsdkUart, real_time: bool) -> ! {
    let (source, config) = if real_time {
        (TimeSource::SysTick, DeviceConfig::default())
    } else {
        let config = DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        };
        (TimeSource::Virtual, config)
    };
    let clock = BoardClock::new(source);
    let mut device: BoardDevice<'_, P> = Device::new(plant, BoardLink::uart(uart), &clock, config);
    let mut free = FreeRunning::new();
    let mut bad_frames = 0;
    let timing = if real_time {
        "in real time"
    } else {
        "free-running"
    };
    heprintln!("tether board: serving {}", timing);
    loop {
        device.poll();
        report_bad_frames(&device, &mut bad_frames);
        if source == TimeSource::Virtual {
            free.advance(&mut device, &clock);
        }
    }
}

/// Prints the device's count of refused host frames when it differs from `reported`.
fn report_bad_frames<P: Plant>(device: &BoardDevice<'_, P>, reported: &mut u32) {
    let bad = device.stats().bad_frames;
    if bad != *reported {
        *reported = bad;
        heprintln!("tether board: {} bad frames from the host", bad);
    }
}

/// The free-running clock's rules (module documentation).
pub(crate) struct FreeRunning {
    /// SysTick time at the last [`FreeRunning::advance`], µs.
    last_us: u64,
}

impl FreeRunning {
    pub(crate) fn new() -> Self {
        FreeRunning {
            last_us: systick::now_us(),
        }
    }

    /// Moves `clock` after one poll of `device` (on any link).
    pub(crate) fn advance<P: Plant, L: Read + ReadReady + Write + WriteReady>(
        &mut self,
        device: &mut Device<P, L, &BoardClock, POLICY_CAPACITY, NOISE_CAPACITY>,
        clock: &BoardClock,
    ) {
        let now_hw = systick::now_us();
        let elapsed = now_hw.saturating_sub(self.last_us);
        self.last_us = now_hw;
        if device.state() != DeviceState::Running {
            clock.advance_by(elapsed);
            return;
        }
        let Ok(false) = device.link_io_mut().read_ready() else {
            return; // host input first: handle it before time moves
        };
        if device.tx_pending() > 0 || device.awaiting_release() {
            // The host has not taken the last output, or not confirmed what the
            // retransmit ring keeps: time stops.
            return;
        }
        let wake = device.next_wakeup_us();
        if wake > clock.now_us() {
            clock.advance_to(wake);
        } else {
            clock.advance_by(elapsed);
        }
    }
}
