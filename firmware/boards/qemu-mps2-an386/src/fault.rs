//! Fatal errors end the emulation with a non-zero exit status, so a panic or a fault fails
//! whatever test or script runs the image: a message on the host's stderr over
//! semihosting, then `SYS_EXIT` with a failure code (QEMU exits with status 1).

use core::panic::PanicInfo;

use cortex_m_rt::{ExceptionFrame, exception};
use cortex_m_semihosting::{debug, heprintln};

/// Prints `tether board: <what>` to the host's stderr and stops the emulation with a
/// failure status.
pub fn fail(what: core::fmt::Arguments<'_>) -> ! {
    cortex_m::interrupt::disable();
    heprintln!("tether board: {}", what);
    debug::exit(debug::EXIT_FAILURE);
    // Only reached without a semihosting host (no QEMU, no debugger): stop here.
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    fail(format_args!("panicked: {}", info))
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    fail(format_args!("hard fault at pc {:#010x}", frame.pc()))
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    fail(format_args!("unexpected exception or interrupt {}", irqn))
}
