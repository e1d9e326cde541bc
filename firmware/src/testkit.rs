//! Test doubles for the runtime's unit tests: a 1-D integrator plant, a hand-driven clock and
//! an in-memory loopback link with a host-side helper.
extern crate std;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use heapless::Vec as HVec;
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{HostMessage, PolicyUpload};
use tether_shared::{ActionSpace, DeviceMessage, PlantDescription, PolicySpec};

use crate::clock::Clock;
use crate::plant::{Action, Plant, StepOutcome};

/// `x' = u` at 100 Hz: observation `[x, 1]`, action `u ∈ [-1, 1]` (or 3 choices −1, 0, +1),
/// reward `−x²`, terminated when `|x| > 5`.
pub struct Integrator {
    pub x: f32,
    pub discrete: bool,
    pub episode_steps: u32,
    /// Observation becomes NaN from this step of an episode on.
    pub nan_from_step: Option<u32>,
    pub step: u32,
    pub safe: bool,
    pub safe_calls: u32,
    pub resets: Vec<u64>,
    /// Seeds of [`Plant::vary`], each with the number of resets before it.
    pub varied: Vec<(u64, usize)>,
    pub applied: Vec<f32>,
}

impl Integrator {
    pub fn new(discrete: bool) -> Self {
        Integrator {
            x: 0.0,
            discrete,
            episode_steps: 50,
            nan_from_step: None,
            step: 0,
            safe: false,
            safe_calls: 0,
            resets: Vec::new(),
            varied: Vec::new(),
            applied: Vec::new(),
        }
    }
}

impl Plant for Integrator {
    fn description(&self) -> PlantDescription {
        PlantDescription {
            name: heapless::String::try_from("integrator").unwrap(),
            obs_dim: 2,
            action: if self.discrete {
                ActionSpace::Discrete { n: 3 }
            } else {
                ActionSpace::Continuous {
                    low: HVec::from_slice(&[-1.0]).unwrap(),
                    high: HVec::from_slice(&[1.0]).unwrap(),
                }
            },
            control_rate_hz: 100.0,
            episode_steps: self.episode_steps,
        }
    }

    fn reset(&mut self, seed: u64) {
        self.resets.push(seed);
        self.x = ((seed % 1000) as f32 / 1000.0) - 0.5;
        self.step = 0;
        self.safe = false;
    }

    fn observe(&mut self, obs: &mut [f32]) {
        let nan = self.nan_from_step.is_some_and(|s| self.step >= s);
        obs[0] = if nan { f32::NAN } else { self.x };
        obs[1] = 1.0;
    }

    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        let u = match action {
            Action::Continuous(a) => a[0],
            Action::Discrete(k) => k as f32 - 1.0,
        };
        self.applied.push(u);
        self.x += 0.01 * u;
        self.step += 1;
        StepOutcome {
            reward: -self.x * self.x,
            terminated: self.x.abs() > 5.0,
        }
    }

    fn safe_state(&mut self) {
        self.safe = true;
        self.safe_calls += 1;
    }

    // Physical, as far as parameters go: `set_params` keeps the refusing default.
    fn vary(&mut self, seed: u64) {
        self.varied.push((seed, self.resets.len()));
    }
}

/// A clock tests advance by hand; optionally ticks by `auto_tick_us` on every read.
#[derive(Clone, Default)]
pub struct ManualClock {
    pub now: Rc<Cell<u64>>,
    pub auto_tick_us: Rc<Cell<u64>>,
}

impl ManualClock {
    pub fn advance(&self, us: u64) {
        self.now.set(self.now.get() + us);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        let t = self.now.get();
        self.now.set(t + self.auto_tick_us.get());
        t
    }
}

#[derive(Default)]
pub struct Wire {
    pub to_device: VecDeque<u8>,
    pub to_host: VecDeque<u8>,
    /// The device may write only while fewer bytes than this wait for the host.
    pub host_capacity: usize,
}

/// The device's end of an in-memory link.
#[derive(Clone)]
pub struct LoopLink(pub Rc<RefCell<Wire>>);

impl ErrorType for LoopLink {
    type Error = ErrorKind;
}

impl Read for LoopLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut wire = self.0.borrow_mut();
        let n = buf.len().min(wire.to_device.len());
        for (slot, byte) in buf.iter_mut().zip(wire.to_device.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl ReadReady for LoopLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(!self.0.borrow().to_device.is_empty())
    }
}

impl Write for LoopLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut wire = self.0.borrow_mut();
        let room = wire.host_capacity.saturating_sub(wire.to_host.len());
        let n = room.min(buf.len());
        wire.to_host.extend(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl WriteReady for LoopLink {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        let wire = self.0.borrow();
        Ok(wire.to_host.len() < wire.host_capacity)
    }
}

/// The host's end: sends frames, collects decoded device messages.
pub struct TestHost {
    pub wire: Rc<RefCell<Wire>>,
    decoder: FrameDecoder<MAX_FRAME_LEN>,
}

impl TestHost {
    pub fn send(&self, message: &HostMessage) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = frame::encode(message, &mut buf).unwrap();
        self.wire.borrow_mut().to_device.extend(frame.iter());
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.wire.borrow_mut().to_device.extend(bytes);
    }

    pub fn receive(&mut self) -> Vec<DeviceMessage> {
        let bytes: Vec<u8> = self.wire.borrow_mut().to_host.drain(..).collect();
        let mut input = &bytes[..];
        let mut out = Vec::new();
        while let Some(m) = self.decoder.decode_next::<DeviceMessage>(&mut input) {
            out.push(m.expect("device sent a bad frame"));
        }
        out
    }
}

pub fn loopback(host_capacity: usize) -> (TestHost, LoopLink) {
    let wire = Rc::new(RefCell::new(Wire {
        host_capacity,
        ..Wire::default()
    }));
    (
        TestHost {
            wire: wire.clone(),
            decoder: FrameDecoder::new(),
        },
        LoopLink(wire),
    )
}

/// Deterministic, smallish parameters for `spec`, with log-std `log_std`.
pub fn params_for(spec: &PolicySpec, seed: u32, log_std: f32) -> Vec<f32> {
    let n = spec.param_count();
    let mut p: Vec<f32> = (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.6
        })
        .collect();
    for v in p.iter_mut().skip(n - spec.log_std_len()) {
        *v = log_std;
    }
    p
}

/// The messages of a complete upload.
pub fn upload_messages(version: u32, spec: &PolicySpec, params: &[f32]) -> Vec<HostMessage> {
    PolicyUpload::new(version, spec, params)
        .messages()
        .collect()
}
