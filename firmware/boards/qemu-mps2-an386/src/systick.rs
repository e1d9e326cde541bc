//! SysTick as the board's time base: a 64-bit tick count at the core clock, and
//! microseconds from it.
//!
//! QEMU's mps2-an386 clocks the core (and so SysTick with `CLKSOURCE = 1`) at 25 MHz. The
//! 24-bit counter reloads every 2¹⁹ µs (13,107,200 ticks), a whole number of microseconds,
//! so microseconds are `wraps · 2¹⁹ + elapsed ticks / 25` with one 32-bit division. The
//! SysTick exception counts the wraps.
//!
//! Under `qemu-system-arm -icount shift=0` one instruction takes 1 ns of virtual time, so
//! one tick is exactly [`INSTRUCTIONS_PER_TICK`] instructions: the benchmark's meter.
//! (QEMU does not model the DWT cycle counter; it reads 0.)

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// Core clock of QEMU's mps2-an386, in Hz.
pub const CORE_CLOCK_HZ: u32 = 25_000_000;

/// SysTick ticks per microsecond.
const TICKS_PER_US: u32 = CORE_CLOCK_HZ / 1_000_000;

/// Microseconds per SysTick wrap, a power of two.
const WRAP_US_LOG2: u32 = 19;

/// Ticks per wrap; the reload value is one less. Fits SysTick's 24 bits.
const TICKS_PER_WRAP: u32 = TICKS_PER_US << WRAP_US_LOG2;

/// Instructions per tick under `-icount shift=0` (1 ns per instruction, 40 ns per tick).
pub const INSTRUCTIONS_PER_TICK: u32 = 1_000_000_000 / CORE_CLOCK_HZ;

const _: () = assert!(TICKS_PER_WRAP <= 1 << 24);

/// Wraps of the counter since [`start`].
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Starts SysTick from the core clock with its wrap interrupt; time starts at 0.
pub fn start(mut syst: SYST) {
    syst.disable_counter();
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(TICKS_PER_WRAP - 1);
    syst.clear_current();
    WRAPS.store(0, Ordering::Relaxed);
    syst.enable_interrupt();
    syst.enable_counter();
}

/// `(wraps, ticks into the current wrap)`, read consistently: the wrap count is read
/// before and after the counter and the pair retried if a wrap came between.
fn read() -> (u32, u32) {
    loop {
        let wraps = WRAPS.load(Ordering::Acquire);
        let remaining = SYST::get_current();
        if WRAPS.load(Ordering::Acquire) == wraps {
            return (wraps, TICKS_PER_WRAP - 1 - remaining);
        }
    }
}

/// Core clock ticks since [`start`].
pub fn ticks() -> u64 {
    let (wraps, into) = read();
    u64::from(wraps) * u64::from(TICKS_PER_WRAP) + u64::from(into)
}

/// Microseconds since [`start`].
pub fn now_us() -> u64 {
    let (wraps, into) = read();
    (u64::from(wraps) << WRAP_US_LOG2) + u64::from(into / TICKS_PER_US)
}
