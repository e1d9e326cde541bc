//! What the board is asked to do, from the semihosting command line (QEMU's `-append`).
//!
//! Words, any order: `realtime` (pace the control loop by SysTick at the plant's rate;
//! the default runs free), `bench` (run the budget benchmark instead of serving the host,
//! print one JSON line over semihosting and exit). Unknown words stop the board with an
//! error naming them, rather than being ignored.

use cortex_m_semihosting::{nr, syscall1};

/// How the board runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve a host over UART0, episodes as fast as the host takes their data.
    FreeRunning,
    /// Serve a host over UART0, one control step per plant period of SysTick time.
    RealTime,
    /// Measure the budgets and exit.
    Bench,
}

/// The command line could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A word that is not a known option.
    UnknownWord(&'a str),
    /// Two modes asked for at once.
    TwoModes,
}

/// Length of the buffer the command line is read into.
pub const CMDLINE_LEN: usize = 256;

/// Reads the semihosting command line into `buf`; the empty string if the host has none.
pub fn read(buf: &mut [u8; CMDLINE_LEN]) -> &str {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: SYS_GET_CMDLINE writes at most `block[1]` bytes to `block[0]` and the length
    // back into `block[1]`; both live until after the call.
    let status = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    // SAFETY: the host may have written `block[1]`; read it past the optimiser.
    let len = unsafe { core::ptr::read_volatile(&block[1]) };
    if status != 0 {
        return "";
    }
    let bytes = buf.get(..len.min(buf.len())).unwrap_or(&[]);
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The mode asked for by `cmdline`, whose first word is the program's name, as in a C
/// `argv` (QEMU puts the `-kernel` path there, then the `-append` words).
pub fn parse(cmdline: &str) -> Result<Mode, CmdlineError<'_>> {
    let mut mode = None;
    for word in cmdline.split_ascii_whitespace().skip(1) {
        let this = match word {
            "realtime" => Mode::RealTime,
            "bench" => Mode::Bench,
            "free" => Mode::FreeRunning,
            other => return Err(CmdlineError::UnknownWord(other)),
        };
        if mode.replace(this).is_some_and(|m| m != this) {
            return Err(CmdlineError::TwoModes);
        }
    }
    Ok(mode.unwrap_or(Mode::FreeRunning))
}
