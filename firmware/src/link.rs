//! The link endpoint: frames in, frames out, over any non-blocking byte stream.
//!
//! Incoming bytes go through a [`FrameDecoder`]; outgoing frames are encoded straight into a
//! fixed byte queue ([`RetransmitQueue`]) that [`LinkEndpoint::poll_write`] drains whenever
//! the link says it can take bytes, and which keeps the data frames it sent until the host
//! releases them (see [`crate::retransmit`]). Nothing here ever blocks: the endpoint reads
//! only after `read_ready()` and writes only after `write_ready()`.

use embedded_io::{Read, ReadReady, Write, WriteReady};
use serde::Serialize;
use tether_shared::frame::{EndedFrame, FrameDecoder, FrameError, MAX_FRAME_LEN};
use tether_shared::message::{HostMessage, ReleaseMark, StepRange};

use crate::retransmit::RetransmitQueue;
pub use crate::retransmit::{DataKey, QueueError, ResendOutcome, RetransmitStats};

/// Bytes of the outgoing queue kept free for control messages (acknowledgements, refusals,
/// heartbeats): transition batches and episode ends may not use them, so an episode that
/// overran can still report that it did.
pub const CONTROL_RESERVE: usize = 256;

/// Capacity of the outgoing queue, in bytes: four worst-case frames plus the control
/// reserve. What is not waiting to be written keeps sent data frames for resending, so
/// this is also the retransmit ring's size.
pub const TX_CAPACITY: usize = 4 * MAX_FRAME_LEN + CONTROL_RESERVE;

/// Data frames the outgoing queue keeps for resending at most.
pub const KEPT_FRAMES: usize = 32;

/// Size of the stack buffer the runtime reads into per `read` call, in bytes.
pub const READ_BUF_LEN: usize = 64;

/// How urgently a frame must go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Bulk data (transition batches): may not use the last [`CONTROL_RESERVE`] bytes.
    Data,
    /// Control messages: may use the whole queue.
    Control,
}

impl Priority {
    fn reserve(self) -> usize {
        match self {
            Priority::Data => CONTROL_RESERVE,
            Priority::Control => 0,
        }
    }
}

/// One end of the framed link over a non-blocking byte stream `L`, with an outgoing queue
/// of `TX` bytes (a real device's is [`TX_CAPACITY`]).
pub struct LinkEndpoint<L, const TX: usize = TX_CAPACITY> {
    io: L,
    decoder: FrameDecoder<MAX_FRAME_LEN>,
    tx: RetransmitQueue<TX, KEPT_FRAMES>,
}

impl<L> LinkEndpoint<L>
where
    L: Read + ReadReady + Write + WriteReady,
{
    /// An endpoint with empty buffers over `io` and a device's outgoing queue
    /// ([`TX_CAPACITY`]).
    pub fn new(io: L) -> Self {
        Self::with_queue(io)
    }
}

impl<L, const TX: usize> LinkEndpoint<L, TX>
where
    L: Read + ReadReady + Write + WriteReady,
{
    /// An endpoint with empty buffers over `io` and an outgoing queue of `TX` bytes.
    pub fn with_queue(io: L) -> Self {
        LinkEndpoint {
            io,
            decoder: FrameDecoder::new(),
            tx: RetransmitQueue::new(),
        }
    }

    /// Gives the byte stream back.
    pub fn into_inner(self) -> L {
        self.io
    }

    /// The byte stream.
    pub fn io(&self) -> &L {
        &self.io
    }

    /// The byte stream, mutably.
    pub fn io_mut(&mut self) -> &mut L {
        &mut self.io
    }

    /// Bytes queued but not yet written.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// Reads what the link has ready (at most `buf.len()` bytes, one `read` call) and
    /// returns the count; 0 when nothing is ready or the link failed.
    pub fn poll_read(&mut self, buf: &mut [u8]) -> usize {
        match self.io.read_ready() {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(_) => return 0,
        }
        match self.io.read(buf) {
            Ok(n) => n.min(buf.len()),
            Err(_) => 0,
        }
    }

    /// Takes bytes from `input` until a host frame ends (see [`FrameDecoder::next_frame`]);
    /// decode it with [`LinkEndpoint::decode_frame`] before taking more.
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<Result<EndedFrame, FrameError>> {
        self.decoder.next_frame(input)
    }

    /// The host message in the frame [`LinkEndpoint::next_frame`] just ended (see
    /// [`FrameDecoder::decode_frame`]: not inlined, its temporaries are gone on return).
    pub fn decode_frame(&mut self, frame: EndedFrame) -> Result<HostMessage, FrameError> {
        self.decoder.decode_frame(frame)
    }

    /// Queues `message` as one frame (not kept for resending).
    pub fn send<M: Serialize>(
        &mut self,
        message: &M,
        priority: Priority,
    ) -> Result<usize, QueueError> {
        let result = self.tx.push_frame(message, priority.reserve(), None);
        if result.is_err() && priority == Priority::Control {
            warn!("outgoing queue full: control message dropped");
        }
        result
    }

    /// Queues a data frame (transition batch or episode end) carrying `key`, at most
    /// `bound` bytes encoded, and keeps it for resending until the host releases it.
    /// Evicts the least recently sent kept frames when it must.
    pub fn send_kept<M: Serialize>(
        &mut self,
        message: &M,
        key: DataKey,
        bound: usize,
        priority: Priority,
    ) -> Result<usize, QueueError> {
        self.tx
            .push_frame(message, priority.reserve(), Some((key, bound)))
    }

    /// Whether a data frame of up to `bound` bytes fits only once the host releases frames
    /// already written: the host's release, not the link, is what it waits for.
    pub fn waits_for_release(&self, bound: usize) -> bool {
        let reserve = Priority::Data.reserve();
        !self.tx.has_room(bound, reserve) && self.tx.fits_once_released(bound, reserve)
    }

    /// Stops keeping the frames `mark` releases.
    pub fn release(&mut self, mark: &ReleaseMark) {
        self.tx.release(mark);
    }

    /// Stops keeping the frames wholly inside `range` (the host's selective
    /// acknowledgement).
    pub fn release_received(&mut self, range: &StepRange) {
        self.tx.release_received(range);
    }

    /// Queues again the kept frames `range` asks for.
    pub fn resend(&mut self, range: &StepRange) -> ResendOutcome {
        self.tx.resend(range)
    }

    /// Counts a resend request refused outright.
    pub fn count_refused_resend(&mut self) {
        self.tx.count_refusal();
    }

    /// Stops keeping any frame (a new run or session begins).
    pub fn forget_kept(&mut self) {
        self.tx.forget();
    }

    /// The retransmit ring's counters.
    pub fn retransmit_stats(&self) -> RetransmitStats {
        self.tx.stats()
    }

    /// Writes queued bytes while the link can take them without blocking.
    pub fn poll_write(&mut self) {
        // Bounded: every successful round consumes at least one byte.
        for _ in 0..TX_CAPACITY {
            if self.tx.is_empty() {
                return;
            }
            match self.io.write_ready() {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            match self.io.write(self.tx.pending()) {
                Ok(0) => return,
                Ok(n) => self.tx.consume(n.min(self.tx.len())),
                Err(_) => return,
            }
        }
    }

    /// Forgets a partly received frame and everything queued for sending.
    pub fn reset(&mut self) {
        self.decoder.reset();
        self.tx.clear();
    }
}
