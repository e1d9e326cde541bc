//! A scripted host for the benchmark: the frames of a policy upload (begin, chunks,
//! commit) and a run command, encoded one at a time as the device reads them, so the
//! whole upload never sits in RAM.

use tether_shared::frame::{self, MAX_FRAME_LEN, PARAMS_CRC};
use tether_shared::message::{POLICY_CHUNK_VALUES, PolicyBegin, PolicyChunk, RunCommand};
use tether_shared::{HostMessage, PolicySpec};

/// The benchmark policy's parameter `i` (wire order): a fixed pseudo-random value in
/// ±0.15, the same formula as the host benchmark (`firmware/benches/support`).
pub fn bench_param(i: usize) -> f32 {
    let v = ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5;
    v * 0.3
}

/// Host messages replayed to the device, frame by frame.
pub struct Script {
    spec: PolicySpec,
    version: u32,
    crc: u32,
    run: RunCommand,
    /// Index of the next message to encode: 0 begin, then the chunks, commit, run.
    next: usize,
    frame: [u8; MAX_FRAME_LEN],
    /// The encoded frame is `frame[..len]`; `pos` bytes of it were read.
    len: usize,
    pos: usize,
}

impl Script {
    /// The upload of policy `version` with shape `spec` and [`bench_param`] values, then
    /// `run`.
    pub fn upload_and_run(spec: PolicySpec, version: u32, run: RunCommand) -> Self {
        let mut crc = PARAMS_CRC.digest();
        for i in 0..spec.param_count() {
            crc.update(&bench_param(i).to_le_bytes());
        }
        Script {
            spec,
            version,
            crc: crc.finalize(),
            run,
            next: 0,
            frame: [0; MAX_FRAME_LEN],
            len: 0,
            pos: 0,
        }
    }

    fn chunks(&self) -> usize {
        self.spec.param_count().div_ceil(POLICY_CHUNK_VALUES)
    }

    /// Whether every byte of every message was read.
    pub fn is_done(&self) -> bool {
        self.pos == self.len && self.next > self.chunks() + 2
    }

    /// Message `index` of the script.
    fn message(&self, index: usize) -> Option<HostMessage> {
        let chunks = self.chunks();
        match index {
            0 => Some(HostMessage::PolicyBegin(PolicyBegin {
                version: self.version,
                spec: self.spec.clone(),
                len: self.spec.param_count() as u32,
                crc: self.crc,
            })),
            i if i <= chunks => {
                let offset = (i - 1) * POLICY_CHUNK_VALUES;
                let end = (offset + POLICY_CHUNK_VALUES).min(self.spec.param_count());
                let mut values = heapless::Vec::new();
                for j in offset..end {
                    values.push(bench_param(j)).ok()?;
                }
                Some(HostMessage::PolicyChunk(PolicyChunk {
                    version: self.version,
                    offset: offset as u32,
                    values,
                }))
            }
            i if i == chunks + 1 => Some(HostMessage::PolicyCommit {
                version: self.version,
            }),
            i if i == chunks + 2 => Some(HostMessage::Run(self.run.clone())),
            _ => None,
        }
    }

    /// Encodes the next message into `frame`; false when the script is over. Not inlined:
    /// the message and its encoding (about 1 KB each) would otherwise sit in the frame of
    /// the device's receive loop, which reads from the script, under every handler it calls
    /// (this is the benchmark's host, not the device's cost).
    #[inline(never)]
    fn encode_next(&mut self) -> bool {
        let Some(message) = self.message(self.next) else {
            return false;
        };
        self.next += 1;
        self.len = frame::encode(&message, &mut self.frame).map_or(0, |f| f.len());
        self.pos = 0;
        true
    }

    /// Copies the next bytes of the script into `buf`; 0 when it is over.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        if self.pos == self.len && !self.encode_next() {
            return 0;
        }
        let pending = self.frame.get(self.pos..self.len).unwrap_or(&[]);
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.pos += n;
        n
    }
}
