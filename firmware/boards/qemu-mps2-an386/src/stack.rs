//! Stack painting: the stack's high-water mark.
//!
//! At boot every word between the end of the statics and the stack pointer is filled with
//! [`PAINT`]; later, the lowest word no longer holding it is as deep as the stack has ever
//! reached. The stack grows down from the top of RAM (cortex-m-rt's `_stack_start`) towards
//! the statics' end (`__sheap`, there is no heap).

use core::ptr::{read_volatile, write_volatile};

/// The fill pattern (not a small integer, not a common float).
const PAINT: u32 = 0xC5AC_CE55;

unsafe extern "C" {
    /// End of the statics (cortex-m-rt's linker script).
    static mut __sheap: u32;
    /// Top of the stack, the initial stack pointer (cortex-m-rt's linker script).
    static _stack_start: u32;
}

fn statics_end() -> usize {
    (&raw mut __sheap) as usize
}

fn stack_top() -> usize {
    (&raw const _stack_start) as usize
}

/// Fills the free stack below the current stack pointer. Call it first thing, before any
/// interrupt is enabled.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize & !3;
    let mut word = statics_end();
    while word < sp {
        // SAFETY: between the statics' end and the stack pointer nothing lives yet; the
        // words are aligned and inside RAM (the linker script's own symbols).
        unsafe { write_volatile(word as *mut u32, PAINT) };
        word += 4;
    }
}

/// Bytes of stack used at the deepest so far: from the top down to the lowest word that
/// lost its paint.
pub fn peak_bytes() -> usize {
    let mut word = statics_end();
    let top = stack_top();
    // SAFETY: aligned words between the statics' end and the stack top, all in RAM; the
    // ones still painted are unused, the first one that is not is the high-water mark.
    while word < top && unsafe { read_volatile(word as *const u32) } == PAINT {
        word += 4;
    }
    top - word
}

/// Bytes between the statics' end and the stack top: the most the stack can use.
pub fn capacity_bytes() -> usize {
    stack_top() - statics_end()
}
