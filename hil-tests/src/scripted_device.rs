//! A scripted protocol peer for host-side bad-input tests: it answers the handshake with a
//! given plant, acknowledges every upload step, run and stop, reports a chosen state in its
//! heartbeats, and after a run starts sends whatever its script produces — nothing at all
//! (a device stuck while it claims to run), or arbitrary messages (fuzzing the host's
//! round).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tether_firmware::FIRMWARE_VERSION;
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{AckTopic, DeviceInfo, DeviceState, Heartbeat};
use tether_shared::{DeviceMessage, HostMessage, PROTOCOL_VERSION, PlantDescription};

/// Messages a scripted device sends once a run has started, one call per read.
pub type Script = Box<dyn FnMut() -> Vec<DeviceMessage> + Send>;

/// A byte stream behaving as a device (see the module documentation).
pub struct ScriptedDevice {
    plant: PlantDescription,
    state: DeviceState,
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    outgoing: VecDeque<u8>,
    running: bool,
    script: Script,
    next_heartbeat: Instant,
    heartbeat_period: Duration,
}

impl ScriptedDevice {
    /// A device of `plant` whose heartbeats report `state` and whose runs produce what
    /// `script` returns.
    pub fn new(plant: PlantDescription, state: DeviceState, script: Script) -> Self {
        ScriptedDevice {
            plant,
            state,
            decoder: Box::new(FrameDecoder::new()),
            outgoing: VecDeque::new(),
            running: false,
            script,
            next_heartbeat: Instant::now(),
            heartbeat_period: Duration::from_millis(20),
        }
    }

    fn send(&mut self, message: &DeviceMessage) {
        let mut out = [0u8; MAX_FRAME_LEN];
        if let Ok(bytes) = frame::encode(message, &mut out) {
            self.outgoing.extend(bytes.iter().copied());
        }
    }

    /// The answer to one host message.
    fn answer(&mut self, message: HostMessage) {
        let reply = match message {
            HostMessage::Hello { .. } => DeviceMessage::Hello(DeviceInfo {
                protocol_version: PROTOCOL_VERSION,
                firmware_version: FIRMWARE_VERSION,
                plant: self.plant.clone(),
                policy_capacity: 100_000,
                active_policy: None,
                action_rate_limit: heapless::Vec::new(),
            }),
            HostMessage::PolicyBegin(begin) => DeviceMessage::Ack(AckTopic::PolicyBegin {
                version: begin.version,
            }),
            HostMessage::PolicyChunk(chunk) => DeviceMessage::Ack(AckTopic::PolicyChunk {
                version: chunk.version,
                received: chunk.offset + chunk.values.len() as u32,
            }),
            HostMessage::PolicyCommit { version } => {
                DeviceMessage::Ack(AckTopic::PolicyCommit { version })
            }
            HostMessage::Run(_) => {
                self.running = true;
                DeviceMessage::Ack(AckTopic::Run)
            }
            HostMessage::Stop => {
                self.running = false;
                DeviceMessage::Ack(AckTopic::Stop)
            }
            _ => return,
        };
        self.send(&reply);
    }
}

impl Write for ScriptedDevice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut input = buf;
        while let Some(result) = self.decoder.decode_next::<HostMessage>(&mut input) {
            if let Ok(message) = result {
                self.answer(message);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ScriptedDevice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.next_heartbeat {
            self.next_heartbeat = Instant::now() + self.heartbeat_period;
            let beat = DeviceMessage::Heartbeat(Heartbeat {
                uptime_us: 0,
                state: self.state,
                last_host_sequence: 0,
            });
            self.send(&beat);
        }
        if self.running && self.outgoing.is_empty() {
            for message in (self.script)() {
                self.send(&message);
            }
        }
        if self.outgoing.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(self.outgoing.len());
        for (slot, byte) in buf.iter_mut().zip(self.outgoing.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
