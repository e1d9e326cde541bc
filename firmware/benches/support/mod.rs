//! Shared by the control-step benchmark and the `step_count` example: a qube device with a
//! [64, 64] Gaussian policy, fed by a scripted link and a hand-driven clock.
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use tether_firmware::plant::{Plant, qube::Qube};
use tether_firmware::{Clock, Device, DeviceConfig};
use tether_shared::frame::{self, MAX_FRAME_LEN};
use tether_shared::message::{PolicyUpload, RunCommand, RunMode};
use tether_shared::{HostMessage, PolicySpec};

/// Parameters of a [64, 64] Gaussian policy with normaliser on the qube (6 → 64 → 64 → 1).
pub const CAP: usize = 4_686;

/// gSDE noise-matrix room: the qube's 64 last-layer features times its one action, as the
/// Cortex-M board sizes it (the firmware's default leaves room for four actions).
pub const NOISE_CAP: usize = 64;

/// Hidden widths benchmarked.
pub const HIDDEN: [u16; 2] = [64, 64];

/// Reads from a prepared byte script; discards what the device writes.
pub struct ScriptLink {
    input: Vec<u8>,
    pos: usize,
    pub written: u64,
}

impl ErrorType for ScriptLink {
    type Error = ErrorKind;
}
impl Read for ScriptLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let rest = &self.input[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}
impl ReadReady for ScriptLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(self.pos < self.input.len())
    }
}
impl Write for ScriptLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}
impl WriteReady for ScriptLink {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(true)
    }
}

/// A clock the driver sets by hand.
#[derive(Clone, Default)]
pub struct HandClock(pub Rc<Cell<u64>>);

impl Clock for HandClock {
    fn now_us(&self) -> u64 {
        self.0.get()
    }
}

pub type BenchDevice = Device<Qube, ScriptLink, HandClock, CAP, NOISE_CAP>;

pub fn spec() -> PolicySpec {
    PolicySpec::for_plant(&Qube::new().description(), &HIDDEN, true)
}

fn frame_into(out: &mut Vec<u8>, m: &HostMessage) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    out.extend_from_slice(frame::encode(m, &mut buf).unwrap());
}

/// A running qube device (Explore mode, watchdog off) with its policy uploaded, and its
/// clock. Each `clock += period; poll()` then takes exactly one control step.
pub fn running_device() -> (Box<BenchDevice>, HandClock) {
    let spec = spec();
    assert_eq!(spec.param_count(), CAP);
    let params: Vec<f32> = (0..CAP)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5)
        .map(|v| v * 0.3)
        .collect();
    let mut script = Vec::new();
    for message in PolicyUpload::new(1, &spec, &params).messages() {
        frame_into(&mut script, &message);
    }
    frame_into(
        &mut script,
        &HostMessage::Run(RunCommand {
            first_episode: 0,
            episodes: 0,
            seed: 1,
            mode: RunMode::Explore,
        }),
    );
    let link = ScriptLink {
        input: script,
        pos: 0,
        written: 0,
    };
    let clock = HandClock::default();
    let config = DeviceConfig {
        watchdog_timeout_us: 0,
        heartbeat_period_us: 500_000,
        action_rate_limit: None,
    };
    let mut device = Box::new(Device::new(Qube::new(), link, clock.clone(), config));
    for _ in 0..64 {
        device.poll();
    }
    assert_eq!(device.active_policy(), Some(1), "policy uploaded");
    (device, clock)
}

/// Advances one control period and polls: one control step.
#[inline(never)]
pub fn step(device: &mut BenchDevice, clock: &HandClock) {
    clock.0.set(clock.0.get() + device.period_us());
    device.poll();
}
