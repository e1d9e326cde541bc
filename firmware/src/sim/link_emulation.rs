//! Link emulation: a byte-rate limit and seeded fault injection around any board link, in
//! the spirit of smoltcp's `FaultInjector`.
//!
//! [`LinkEmulation`] sits between the device and its byte stream and acts on both
//! directions: bytes are delayed to `baud / 10` bytes per second (8N1 framing) measured on
//! the board's clock, corrupted (one random bit flipped), dropped or duplicated at the rates
//! of a [`FaultSpec`], bursts of random bytes are inserted into some transfers (line noise,
//! a radio module's garbage), and the whole link stalls during the spec's stall windows.
//! Device resets in the spec are carried out by the board, which owns the device.
//!
//! # Fault spec grammar
//!
//! ```text
//! spec     := "" | "none" | item ("," item)*
//! item     := "corrupt=" prob          probability per byte of one flipped bit
//!           | "drop=" prob             probability per byte of losing it
//!           | "dup=" prob              probability per byte of sending it twice
//!           | "garbage=" prob [":" len]   probability per transfer (one read or write of the
//!                                        device) of `len` random bytes (default 64) before it
//!           | "stall=" duration "@" time   no byte moves for `duration` from `time` on
//!           | "reset@" time            the device power-cycles at `time`
//! prob     := decimal number in [0, 1]
//! duration := decimal number followed by "us", "ms" or "s"
//! time     := duration, measured on the board's clock from its start
//! ```
//!
//! Example: `corrupt=0.001,drop=0.0005,dup=0.0001,garbage=0.05:64,stall=2s@10s,reset@30s`.
//! `stall` and `reset` may repeat; a rate given twice keeps the last value.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};

use super::BoardLink;
use super::clock::SimClock;
use crate::clock::Clock;
use crate::sampler::Pcg32;

/// A window during which the link moves no bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// Board time the stall starts, µs.
    pub at_us: u64,
    /// How long it lasts, µs.
    pub duration_us: u64,
}

/// Which faults to inject (see the module documentation for the text form).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// Probability per byte of a flipped bit.
    pub corrupt: f64,
    /// Probability per byte of losing it.
    pub drop: f64,
    /// Probability per byte of sending it twice.
    pub duplicate: f64,
    /// Probability per transfer (one device read or write) of a burst of random bytes.
    pub garbage: f64,
    /// Bytes per garbage burst.
    pub garbage_len: usize,
    /// Stall windows.
    pub stalls: Vec<Stall>,
    /// Board times (µs) at which the device power-cycles, ascending.
    pub resets_us: Vec<u64>,
}

/// Bytes in a garbage burst when the spec does not say.
pub const DEFAULT_GARBAGE_LEN: usize = 64;

/// Longest garbage burst a spec may ask for, in bytes.
pub const MAX_GARBAGE_LEN: usize = 4096;

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            corrupt: 0.0,
            drop: 0.0,
            duplicate: 0.0,
            garbage: 0.0,
            garbage_len: DEFAULT_GARBAGE_LEN,
            stalls: Vec::new(),
            resets_us: Vec::new(),
        }
    }
}

impl FaultSpec {
    /// No faults at all.
    pub fn none() -> Self {
        FaultSpec::default()
    }

    /// Whether the spec leaves every byte as it is and moves it at once: no corruption,
    /// drops, duplicates, garbage or stalls (device resets are the board's business).
    pub fn touches_no_byte(&self) -> bool {
        self.corrupt == 0.0
            && self.drop == 0.0
            && self.duplicate == 0.0
            && self.garbage == 0.0
            && self.stalls.is_empty()
    }

    /// Whether the link is stalled at board time `now_us`.
    pub fn stalled_at(&self, now_us: u64) -> bool {
        self.stalls
            .iter()
            .any(|s| now_us >= s.at_us && now_us - s.at_us < s.duration_us)
    }
}

/// Why a fault spec string was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpecError {
    /// The offending item.
    pub item: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for FaultSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad fault item `{}`: {} (expected e.g. corrupt=0.001,drop=0.0005,dup=0.0001,garbage=0.05:64,stall=2s@10s,reset@30s)",
            self.item, self.problem
        )
    }
}

impl std::error::Error for FaultSpecError {}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = FaultSpec::default();
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(spec);
        }
        for raw in s.split(',') {
            let item = raw.trim();
            let err = |problem| FaultSpecError {
                item: item.to_string(),
                problem,
            };
            if let Some(time) = item.strip_prefix("reset@") {
                spec.resets_us.push(parse_duration_us(time).map_err(err)?);
            } else if let Some(rest) = item.strip_prefix("stall=") {
                let (duration, at) = rest
                    .split_once('@')
                    .ok_or(err("a stall needs DURATION@TIME, e.g. stall=2s@10s"))?;
                spec.stalls.push(Stall {
                    at_us: parse_duration_us(at).map_err(err)?,
                    duration_us: parse_duration_us(duration).map_err(err)?,
                });
            } else if let Some((key, value)) = item.split_once('=') {
                let (rate, len) = match (key.trim(), value.split_once(':')) {
                    ("garbage", Some((rate, len))) => (rate, Some(len)),
                    (_, _) => (value, None),
                };
                let p: f64 = rate
                    .trim()
                    .parse()
                    .map_err(|_| err("the rate is not a number"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(err("a rate is a probability in [0, 1]"));
                }
                match key.trim() {
                    "corrupt" => spec.corrupt = p,
                    "drop" => spec.drop = p,
                    "dup" => spec.duplicate = p,
                    "garbage" => {
                        spec.garbage = p;
                        if let Some(len) = len {
                            spec.garbage_len = len
                                .trim()
                                .parse()
                                .ok()
                                .filter(|n| (1..=MAX_GARBAGE_LEN).contains(n))
                                .ok_or(err("a burst length is a number of bytes, 1 to 4096"))?;
                        }
                    }
                    _ => return Err(err(UNKNOWN_FAULT)),
                }
            } else {
                return Err(err(UNKNOWN_FAULT));
            }
        }
        spec.resets_us.sort_unstable();
        Ok(spec)
    }
}

const UNKNOWN_FAULT: &str = "unknown fault; use corrupt, drop, dup, garbage, stall or reset";

/// Parses `10s`, `250ms`, `1.5s`, `800us` into microseconds.
fn parse_duration_us(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return Err("a time needs a unit: us, ms or s");
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| "the time is not a number")?;
    if !(value.is_finite() && value >= 0.0) {
        return Err("a time must be a non-negative number");
    }
    Ok((value * scale).round() as u64)
}

/// A copy of every byte the device wrote to its link, taken *before* fault injection: the
/// device's own record of what it sent (test hook; see `hil-tests/src/faults`). Shared: clones
/// see the same bytes.
#[derive(Clone, Debug, Default)]
pub struct WireTap(Arc<Mutex<Vec<u8>>>);

impl WireTap {
    /// An empty tap.
    pub fn new() -> Self {
        WireTap::default()
    }

    /// Every byte recorded so far, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn record(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
        }
    }
}

/// Bytes held between the emulation and the inner link per direction, at most.
const STAGE_LIMIT: usize = 256;

/// One direction's state: rate budget and bytes already through the fault stage.
struct Direction {
    /// Bytes allowed to move now (fractional, capped at the burst size).
    budget: f64,
    staged: VecDeque<u8>,
}

/// A link wrapped in rate limiting and fault injection. Implements the same traits as the
/// link it wraps.
pub struct LinkEmulation<L> {
    inner: L,
    clock: SimClock,
    spec: FaultSpec,
    /// Bytes per second, if limited.
    rate: Option<f64>,
    rng: Pcg32,
    last_update_us: u64,
    rx: Direction,
    tx: Direction,
    tap: Option<WireTap>,
    /// No rate limit and a spec that touches no byte: reads and writes go straight to the
    /// inner link, without staging or a draw per byte (the emulation would hand on the
    /// same bytes, just later and at a cost per byte; simulated training runs this way).
    transparent: bool,
}

impl<L: BoardLink> LinkEmulation<L> {
    /// Wraps `inner`; `baud` limits each direction to `baud / 10` bytes per second of
    /// `clock`; faults are drawn from a generator seeded with `seed`.
    pub fn new(inner: L, clock: SimClock, baud: Option<u32>, spec: FaultSpec, seed: u64) -> Self {
        let now = clock.now_us();
        LinkEmulation {
            transparent: baud.is_none() && spec.touches_no_byte(),
            inner,
            clock,
            spec,
            rate: baud.map(|b| f64::from(b) / 10.0),
            rng: Pcg32::new(seed),
            last_update_us: now,
            rx: Direction {
                budget: 0.0,
                staged: VecDeque::new(),
            },
            tx: Direction {
                budget: 0.0,
                staged: VecDeque::new(),
            },
            tap: None,
        }
    }

    /// Records every byte the device writes, before faults, into `tap`.
    pub fn with_tap(mut self, tap: Option<WireTap>) -> Self {
        self.tap = tap;
        self
    }

    fn stalled(&self) -> bool {
        self.spec.stalled_at(self.clock.now_us())
    }

    /// Refills both budgets for the time passed since the last call.
    fn refill(&mut self) {
        let now = self.clock.now_us();
        let elapsed = now.saturating_sub(self.last_update_us);
        self.last_update_us = now;
        if let Some(rate) = self.rate {
            // Burst: 20 ms worth of bytes, at least one.
            let burst = (rate * 0.02).max(1.0);
            let add = rate * elapsed as f64 * 1e-6;
            self.rx.budget = (self.rx.budget + add).min(burst);
            self.tx.budget = (self.tx.budget + add).min(burst);
        }
    }

    fn allowance(&self, direction: &Direction, want: usize) -> usize {
        match self.rate {
            Some(_) => (direction.budget.floor().max(0.0) as usize).min(want),
            None => want,
        }
    }

    /// Puts a garbage burst into `out`, with the spec's probability (once per transfer).
    fn inject_garbage(spec: &FaultSpec, rng: &mut Pcg32, out: &mut VecDeque<u8>) {
        if spec.garbage > 0.0 && f64::from(rng.next_u32()) / f64::from(u32::MAX) < spec.garbage {
            for _ in 0..spec.garbage_len {
                out.push_back(rng.next_u32() as u8);
            }
        }
    }

    /// Passes `byte` through the fault stage into `out`.
    fn inject(spec: &FaultSpec, rng: &mut Pcg32, byte: u8, out: &mut VecDeque<u8>) {
        let mut roll = || f64::from(rng.next_u32()) / f64::from(u32::MAX);
        if spec.drop > 0.0 && roll() < spec.drop {
            return;
        }
        let mut byte = byte;
        if spec.corrupt > 0.0 && roll() < spec.corrupt {
            byte ^= 1 << (rng.next_u32() % 8);
        }
        out.push_back(byte);
        if spec.duplicate > 0.0 && f64::from(rng.next_u32()) / f64::from(u32::MAX) < spec.duplicate
        {
            out.push_back(byte);
        }
    }

    /// Moves staged outgoing bytes into the inner link while it takes them.
    fn flush_staged(&mut self) -> Result<(), ErrorKind> {
        while !self.tx.staged.is_empty() && !self.stalled() {
            if !self.inner.write_ready().map_err(kind)? {
                break;
            }
            let (front, _) = self.tx.staged.as_slices();
            let n = self.inner.write(front).map_err(kind)?;
            if n == 0 {
                break;
            }
            self.tx.staged.drain(..n.min(self.tx.staged.len()));
        }
        Ok(())
    }

    /// A transparent link's write: what the inner link takes now, recorded on the tap.
    fn write_through(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() || !self.inner.write_ready().map_err(kind)? {
            return Ok(0);
        }
        let n = self.inner.write(buf).map_err(kind)?.min(buf.len());
        if let Some(tap) = &self.tap {
            tap.record(&buf[..n]);
        }
        Ok(n)
    }

    /// Pulls incoming bytes through the fault stage while budget allows.
    fn fill_rx(&mut self) -> Result<(), ErrorKind> {
        if self.stalled() || !self.rx.staged.is_empty() {
            return Ok(());
        }
        let want = self.allowance(&self.rx, 64);
        if want == 0 || !self.inner.read_ready().map_err(kind)? {
            return Ok(());
        }
        let mut buf = [0u8; 64];
        let n = self.inner.read(&mut buf[..want]).map_err(kind)?;
        if self.rate.is_some() {
            self.rx.budget -= n as f64;
        }
        if n > 0 {
            Self::inject_garbage(&self.spec, &mut self.rng, &mut self.rx.staged);
        }
        for &byte in &buf[..n] {
            Self::inject(&self.spec, &mut self.rng, byte, &mut self.rx.staged);
        }
        Ok(())
    }
}

fn kind<E: embedded_io::Error>(e: E) -> ErrorKind {
    e.kind()
}

impl<L> ErrorType for LinkEmulation<L> {
    type Error = ErrorKind;
}

impl<L: BoardLink> ReadReady for LinkEmulation<L> {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        if self.transparent {
            return self.inner.read_ready().map_err(kind);
        }
        self.refill();
        self.fill_rx()?;
        Ok(!self.rx.staged.is_empty())
    }
}

impl<L: BoardLink> Read for LinkEmulation<L> {
    /// Never blocks: 0 when nothing is ready.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if self.transparent {
            if buf.is_empty() || !self.inner.read_ready().map_err(kind)? {
                return Ok(0);
            }
            return self.inner.read(buf).map_err(kind);
        }
        self.refill();
        self.fill_rx()?;
        let n = buf.len().min(self.rx.staged.len());
        for (slot, byte) in buf.iter_mut().zip(self.rx.staged.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl<L: BoardLink> WriteReady for LinkEmulation<L> {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        if self.transparent {
            return self.inner.write_ready().map_err(kind);
        }
        self.refill();
        self.flush_staged()?;
        Ok(!self.stalled()
            && self.tx.staged.len() < STAGE_LIMIT
            && self.allowance(&self.tx, 1) == 1)
    }
}

impl<L: BoardLink> Write for LinkEmulation<L> {
    /// Never blocks: 0 when the link takes nothing now.
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if self.transparent {
            return self.write_through(buf);
        }
        self.refill();
        if self.stalled() {
            return Ok(0);
        }
        let room = STAGE_LIMIT.saturating_sub(self.tx.staged.len());
        let n = self.allowance(&self.tx, buf.len().min(room));
        if self.rate.is_some() {
            self.tx.budget -= n as f64;
        }
        if let Some(tap) = &self.tap {
            tap.record(&buf[..n]);
        }
        if n > 0 {
            Self::inject_garbage(&self.spec, &mut self.rng, &mut self.tx.staged);
        }
        for &byte in &buf[..n] {
            Self::inject(&self.spec, &mut self.rng, byte, &mut self.tx.staged);
        }
        self.flush_staged()?;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        self.flush_staged()
    }
}

impl<L: BoardLink> BoardLink for LinkEmulation<L> {
    fn host_backpressure(&mut self) -> bool {
        self.inner.host_backpressure()
    }

    fn host_bytes_total(&mut self) -> u64 {
        self.inner.host_bytes_total()
    }

    fn wait(&mut self, timeout: Duration, for_room: bool) {
        if !self.rx.staged.is_empty() {
            return;
        }
        if self.rate.is_some() && self.rx.budget < 1.0 && !for_room {
            // Bytes may be waiting but the rate limit holds them: nothing to do until the
            // clock moves.
            std::thread::sleep(timeout.min(Duration::from_micros(200)));
            return;
        }
        self.inner.wait(timeout, for_room);
    }

    fn has_staged_output(&self) -> bool {
        !self.tx.staged.is_empty()
    }

    fn has_staged_input(&self) -> bool {
        !self.rx.staged.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::pipe::memory_link;

    #[test]
    fn parses_the_documented_example() {
        let spec: FaultSpec = "corrupt=0.001,drop=0.0005,dup=0.0001,stall=2s@10s,reset@30s"
            .parse()
            .unwrap();
        assert_eq!(spec.corrupt, 0.001);
        assert_eq!(spec.drop, 0.0005);
        assert_eq!(spec.duplicate, 0.0001);
        assert_eq!(
            spec.stalls,
            [Stall {
                at_us: 10_000_000,
                duration_us: 2_000_000
            }]
        );
        assert_eq!(spec.resets_us, [30_000_000]);
        assert!(spec.stalled_at(11_999_999) && !spec.stalled_at(12_000_000));
        assert_eq!("".parse::<FaultSpec>().unwrap(), FaultSpec::none());
        let garbage: FaultSpec = "garbage=0.05".parse().unwrap();
        assert_eq!(
            (garbage.garbage, garbage.garbage_len),
            (0.05, DEFAULT_GARBAGE_LEN)
        );
        let garbage: FaultSpec = "garbage=0.5:8".parse().unwrap();
        assert_eq!((garbage.garbage, garbage.garbage_len), (0.5, 8));
        assert_eq!(
            "stall=250ms@1.5s".parse::<FaultSpec>().unwrap().stalls[0],
            Stall {
                at_us: 1_500_000,
                duration_us: 250_000
            }
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("corrupt=2", "probability"),
            ("corupt=0.1", "unknown fault"),
            ("drop=x", "not a number"),
            ("stall=2s", "DURATION@TIME"),
            ("reset@30", "unit"),
            ("stall=-1s@2s", "non-negative"),
            ("garbage=0.1:0", "burst length"),
            ("garbage=0.1:x", "burst length"),
            ("drop=0.1:8", "not a number"),
        ] {
            let e = text.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn rate_limit_follows_the_board_clock() {
        let (_host, dev) = memory_link(1 << 16);
        let clock = SimClock::new_virtual();
        // 10 000 baud: 1000 bytes/s.
        let mut link = LinkEmulation::new(dev, clock.clone(), Some(10_000), FaultSpec::none(), 1);
        let data = [7u8; 100];
        let mut sent = 0;
        while link.write_ready().unwrap() {
            sent += link.write(&data).unwrap();
        }
        assert_eq!(sent, 0, "no budget at t = 0");
        clock.advance_to(10_000); // 10 ms: 10 bytes
        while link.write_ready().unwrap() {
            sent += link.write(&data).unwrap();
        }
        assert_eq!(sent, 10);
    }

    #[test]
    fn faults_are_seeded_and_at_roughly_the_given_rates() {
        let run = |seed| {
            let (mut host, dev) = memory_link(1 << 20);
            let spec: FaultSpec = "corrupt=0.01,drop=0.01,dup=0.01".parse().unwrap();
            let mut link = LinkEmulation::new(dev, SimClock::new_virtual(), None, spec, seed);
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let mut off = 0;
            while off < data.len() {
                off += link.write(&data[off..]).unwrap();
            }
            link.flush().unwrap();
            host.set_timeout(Duration::from_millis(1));
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut host, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        // Drops and dups cancel in expectation: length within a few hundred of 100 000.
        assert!((a.len() as i64 - 100_000).abs() < 600, "{}", a.len());
    }

    /// Garbage bursts: about the given share of transfers gets `len` extra bytes in front,
    /// and every byte sent still arrives, in order, after them.
    #[test]
    fn garbage_bursts_come_before_a_share_of_transfers() {
        let (mut host, dev) = memory_link(1 << 20);
        let spec: FaultSpec = "garbage=0.25:16".parse().unwrap();
        let mut link = LinkEmulation::new(dev, SimClock::new_virtual(), None, spec, 3);
        let transfers = 400;
        for i in 0..transfers {
            let payload = [0xA0 | (i % 16) as u8; 8];
            let mut off = 0;
            while off < payload.len() {
                off += link.write(&payload[off..]).unwrap();
            }
        }
        link.flush().unwrap();
        host.set_timeout(Duration::from_millis(1));
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut host, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let extra = got.len() - transfers * 8;
        assert_eq!(extra % 16, 0, "whole bursts");
        let bursts = extra / 16;
        assert!(
            (60..=140).contains(&bursts),
            "{bursts} bursts in {transfers} transfers"
        );
    }

    /// Without faults or a rate limit the bytes go straight through, the tap still records
    /// them, and neither direction blocks on an empty or full pipe.
    #[test]
    fn a_link_without_faults_passes_bytes_through() {
        let (mut host, dev) = memory_link(8);
        let tap = WireTap::new();
        let mut link = LinkEmulation::new(dev, SimClock::new_virtual(), None, FaultSpec::none(), 1)
            .with_tap(Some(tap.clone()));
        let mut buf = [0u8; 16];
        assert!(!link.read_ready().unwrap());
        assert_eq!(
            link.read(&mut buf).unwrap(),
            0,
            "nothing there: no blocking"
        );
        assert_eq!(link.write(b"0123456789").unwrap(), 8, "what the pipe takes");
        assert!(!link.write_ready().unwrap());
        assert_eq!(link.write(b"89").unwrap(), 0, "full: no blocking");
        assert!(!link.has_staged_output());
        assert_eq!(tap.bytes(), b"01234567");
        host.set_timeout(Duration::from_millis(1));
        assert_eq!(std::io::Read::read(&mut host, &mut buf).unwrap(), 8);
        assert_eq!(&buf[..8], b"01234567");
        assert_eq!(std::io::Write::write(&mut host, b"hi").unwrap(), 2);
        assert!(link.read_ready().unwrap());
        assert_eq!(link.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
    }

    #[test]
    fn stall_moves_no_bytes() {
        let (_host, dev) = memory_link(1 << 16);
        let clock = SimClock::new_virtual();
        let spec: FaultSpec = "stall=1s@0s".parse().unwrap();
        let mut link = LinkEmulation::new(dev, clock.clone(), None, spec, 1);
        assert!(!link.write_ready().unwrap());
        assert_eq!(link.write(b"abc").unwrap(), 0);
        clock.advance_to(1_000_000);
        assert!(link.write_ready().unwrap());
    }
}
