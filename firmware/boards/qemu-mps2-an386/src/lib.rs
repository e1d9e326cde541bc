//! tether on QEMU's `mps2-an386` machine: a Cortex-M4F with a CMSDK UART, SysTick and
//! semihosting, running a plant model as a virtual plant.
//!
//! The board supplies the runtime's three seams — the byte link ([`link::BoardLink`] over
//! [`uart::CmsdkUart`]), the clock ([`clock::BoardClock`] over [`systick`]) and the plant (a
//! model from `tether_firmware::plant`, one image per plant: `src/bin/<plant>.rs`) — and a
//! main loop around `Device::poll` ([`serve`]). [`cmdline`] picks what the image does
//! (serve free-running or in real time, or run the budget [`bench`]); [`fault`] turns
//! panics and faults into a message and a failing exit status; [`stack`] measures the
//! stack's high-water mark.
//!
//! Built by `scripts/cross.sh`; see the README's "Running on a microcontroller".
#![no_std]

pub mod bench;
pub mod clock;
pub mod cmdline;
pub mod deployed;
pub mod fault;
pub mod link;
pub mod script;
pub mod serve;
pub mod stack;
pub mod systick;
pub mod uart;

use tether_firmware::Device;
use tether_firmware::plant::Plant;

use crate::clock::BoardClock;
use crate::cmdline::Mode;
use crate::link::BoardLink;
use crate::uart::{CmsdkUart, UART0_BASE};

/// Policy capacity per buffer, in f32 values: a [64, 64] policy with observation normaliser
/// on any of the plant models fits, with a gSDE head too (4,686 values on the qube, 4,749
/// with gSDE's 64 log-stds in place of one).
pub const POLICY_CAPACITY: usize = 4_752;

/// gSDE noise-matrix values (σ and θ_ε are kept, 8 bytes each): 64 features times the one
/// action of every plant model here. A wider head is refused at upload (`OverCapacity`);
/// the firmware's default room for four actions would cost 1.5 KiB more RAM.
pub const NOISE_CAPACITY: usize = 64;

/// The UART's line rate. QEMU does not pace the bytes, it only wants a valid divisor.
pub const BAUD: u32 = 115_200;

/// The device type of this board, for any plant.
pub type BoardDevice<'a, P> =
    Device<P, BoardLink<'a>, &'a BoardClock, POLICY_CAPACITY, NOISE_CAPACITY>;

/// Brings the board up and runs `plant` as the command line asks; never returns.
pub fn start<P: Plant + Clone>(plant: P) -> ! {
    stack::paint();
    fpu_ieee_defaults();
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        fault::fail(format_args!("core peripherals already taken"))
    };
    systick::start(peripherals.SYST);
    // SAFETY: UART0 is used by nothing else in this image.
    let uart = unsafe { CmsdkUart::new(UART0_BASE, systick::CORE_CLOCK_HZ, BAUD) };
    let mut buf = [0u8; cmdline::CMDLINE_LEN];
    let request = match cmdline::parse_request(cmdline::read(&mut buf)) {
        Ok(request) => request,
        Err(e) => fault::fail(format_args!(
            "bad command line ({:?}); words: free, realtime, bench, deploy, episodes=N, \
             seed=S, eval-seed=S, bench-gsde",
            e
        )),
    };
    // A deploy image runs its policy from boot, asked or not; `bench` still benchmarks.
    match (request.mode, request.deploy.or(deployed::boot_run())) {
        (Mode::Bench, _) => bench::bench(plant, uart, bench::Exploration::Plain),
        (Mode::BenchSde, _) => bench::bench(plant, uart, bench::Exploration::Sde),
        (mode, Some((episodes, seed))) => {
            deployed::serve(plant, uart, mode == Mode::RealTime, episodes, seed)
        }
        (Mode::RealTime, None) => serve::serve(plant, uart, true),
        (Mode::FreeRunning, None) => serve::serve(plant, uart, false),
    }
}

/// Sets the FPU to what the host computes with: round to nearest, subnormals kept
/// (flush-to-zero off), NaNs propagated (default-NaN off). These are the Cortex-M4's reset
/// values; writing them makes the policy's bit-exactness with the host independent of a
/// boot loader that changed them.
fn fpu_ieee_defaults() {
    const FZ: u32 = 1 << 24;
    const DN: u32 = 1 << 25;
    const RMODE: u32 = 0b11 << 22;
    let fpscr = cortex_m::register::fpscr::read().bits();
    let ieee = fpscr & !(FZ | DN | RMODE);
    // SAFETY: only the rounding and subnormal controls change; no FP state is live yet.
    unsafe { cortex_m::register::fpscr::write(cortex_m::register::fpscr::Fpscr::from_bits(ieee)) };
}
