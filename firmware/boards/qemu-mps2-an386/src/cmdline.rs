//! What the board is asked to do, from the semihosting command line (QEMU's `-append`).
//!
//! Words, any order: `realtime` (pace the control loop by SysTick at the plant's rate;
//! the default runs free), `bench` (run the budget benchmark instead of serving the host,
//! print one JSON line over semihosting and exit), `bench-gsde` (the same with a gSDE
//! policy head, and the noise matrix's draw measured), `deploy` (run the policy built into a
//! deploy image with no host: `episodes=N` of them, then exit — 0 or none: for ever —
//! with run seed `seed=S`, or `eval-seed=S` for the episodes `tether eval --sim 1 --seed S`
//! runs; each episode's return is printed over semihosting; a deploy image does this
//! without the word too, unless asked for `bench` or `bench-gsde`). Unknown words stop the
//! board with an error naming them, rather than being ignored.

use cortex_m_semihosting::{nr, syscall1};
use tether_firmware::deploy::evaluation_run_seed;

/// How the board runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve a host over UART0, episodes as fast as the host takes their data.
    FreeRunning,
    /// Serve a host over UART0, one control step per plant period of SysTick time.
    RealTime,
    /// Measure the budgets and exit.
    Bench,
    /// Measure the budgets with a gSDE policy head and exit.
    BenchSde,
}

/// What the command line asks for: how to run, and whether to run the built-in policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// How the board runs.
    pub mode: Mode,
    /// Run the built-in policy (deploy images): episodes (0: for ever) and run seed.
    pub deploy: Option<(u32, u64)>,
}

/// The request in `cmdline`, whose first word is the program's name, as in a C `argv`
/// (QEMU puts the `-kernel` path there, then the `-append` words).
pub fn parse_request(cmdline: &str) -> Result<Request, CmdlineError<'_>> {
    let mut deploy = None::<(u32, u64)>;
    let mut mode_words = [""; 8];
    let mut n = 0;
    for word in cmdline.split_ascii_whitespace().skip(1) {
        if word == "deploy" {
            deploy.get_or_insert((0, 0));
        } else if let Some(value) = word.strip_prefix("episodes=") {
            let episodes = value.parse().map_err(|_| CmdlineError::UnknownWord(word))?;
            deploy.get_or_insert((0, 0)).0 = episodes;
        } else if let Some(value) = word.strip_prefix("seed=") {
            let seed = value.parse().map_err(|_| CmdlineError::UnknownWord(word))?;
            deploy.get_or_insert((0, 0)).1 = seed;
        } else if let Some(value) = word.strip_prefix("eval-seed=") {
            let seed = value.parse().map_err(|_| CmdlineError::UnknownWord(word))?;
            deploy.get_or_insert((0, 0)).1 = evaluation_run_seed(seed);
        } else {
            let slot = mode_words
                .get_mut(n)
                .ok_or(CmdlineError::UnknownWord(word))?;
            *slot = word;
            n += 1;
        }
    }
    let mode = parse_words(mode_words.get(..n).unwrap_or(&[]))?;
    Ok(Request { mode, deploy })
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

fn parse_words<'a>(words: &[&'a str]) -> Result<Mode, CmdlineError<'a>> {
    let mut mode = None;
    for &word in words {
        let this = match word {
            "realtime" => Mode::RealTime,
            "bench" => Mode::Bench,
            "bench-gsde" => Mode::BenchSde,
            "free" => Mode::FreeRunning,
            other => return Err(CmdlineError::UnknownWord(other)),
        };
        if mode.replace(this).is_some_and(|m| m != this) {
            return Err(CmdlineError::TwoModes);
        }
    }
    Ok(mode.unwrap_or(Mode::FreeRunning))
}
