//! The link endpoint: frames in, frames out, over any non-blocking byte stream.
//!
//! Incoming bytes go through a [`FrameDecoder`]; outgoing frames are encoded straight into a
//! fixed byte queue ([`TxQueue`]) that [`LinkEndpoint::poll_write`] drains whenever the link
//! says it can take bytes. Nothing here ever blocks: the endpoint reads only after
//! `read_ready()` and writes only after `write_ready()`.

use embedded_io::{Read, ReadReady, Write, WriteReady};
use serde::Serialize;
use tether_shared::frame::{self, FrameDecoder, FrameError, MAX_FRAME_LEN};
use tether_shared::message::HostMessage;

/// Bytes of the outgoing queue kept free for control messages (acknowledgements, refusals,
/// episode ends, heartbeats): transition batches may not use them, so an episode that
/// overran can still report that it did.
pub const CONTROL_RESERVE: usize = 256;

/// Capacity of the outgoing queue, in bytes: two worst-case frames plus the control reserve.
pub const TX_CAPACITY: usize = 2 * MAX_FRAME_LEN + CONTROL_RESERVE;

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

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free space in the outgoing queue right now.
    Full,
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("outgoing queue full")
    }
}

/// A fixed FIFO of outgoing bytes that frames are encoded into in place.
///
/// Pending bytes live in `buf[head..tail]`. Before a frame is encoded the pending bytes are
/// moved to the front, so the free space is one contiguous run; the move is at most
/// `N` bytes and happens once per frame, not per byte.
pub struct TxQueue<const N: usize> {
    buf: [u8; N],
    head: usize,
    tail: usize,
}

impl<const N: usize> Default for TxQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TxQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        TxQueue {
            buf: [0; N],
            head: 0,
            tail: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.head..self.tail).unwrap_or(&[])
    }

    /// Number of bytes waiting.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Free bytes.
    pub fn free(&self) -> usize {
        N - self.len()
    }

    /// Marks `n` pending bytes as written.
    pub fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Drops everything pending.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Encodes `message` as one frame at the end of the queue, leaving `reserve` bytes free.
    /// Returns the frame's length in bytes.
    pub fn push_frame<M: Serialize>(
        &mut self,
        message: &M,
        reserve: usize,
    ) -> Result<usize, QueueError> {
        if self.head != 0 {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let limit = N.saturating_sub(reserve);
        let space = self.buf.get_mut(self.tail..limit).ok_or(QueueError::Full)?;
        match frame::encode(message, space) {
            Ok(written) => {
                let n = written.len();
                self.tail += n;
                Ok(n)
            }
            Err(_) => Err(QueueError::Full),
        }
    }
}

/// One end of the framed link over a non-blocking byte stream `L`.
pub struct LinkEndpoint<L> {
    io: L,
    decoder: FrameDecoder<MAX_FRAME_LEN>,
    tx: TxQueue<TX_CAPACITY>,
}

impl<L> LinkEndpoint<L>
where
    L: Read + ReadReady + Write + WriteReady,
{
    /// An endpoint with empty buffers over `io`.
    pub fn new(io: L) -> Self {
        LinkEndpoint {
            io,
            decoder: FrameDecoder::new(),
            tx: TxQueue::new(),
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

    /// Decodes the next host message from `input` (see [`FrameDecoder::decode_next`]).
    pub fn decode_next(&mut self, input: &mut &[u8]) -> Option<Result<HostMessage, FrameError>> {
        self.decoder.decode_next(input)
    }

    /// Queues `message` as one frame.
    pub fn send<M: Serialize>(
        &mut self,
        message: &M,
        priority: Priority,
    ) -> Result<usize, QueueError> {
        let reserve = match priority {
            Priority::Data => CONTROL_RESERVE,
            Priority::Control => 0,
        };
        let result = self.tx.push_frame(message, reserve);
        if result.is_err() && priority == Priority::Control {
            warn!("outgoing queue full: control message dropped");
        }
        result
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

#[cfg(test)]
mod tests {
    use tether_shared::message::{AckTopic, DeviceMessage};

    use super::*;

    #[test]
    fn queue_respects_reserve_and_compacts() {
        let mut q = TxQueue::<64>::new();
        let msg = DeviceMessage::Ack(AckTopic::Run);
        let n = q.push_frame(&msg, 0).unwrap();
        assert!(n > 0 && q.len() == n);
        assert_eq!(q.push_frame(&msg, 64 - n), Err(QueueError::Full));
        while q.push_frame(&msg, 0).is_ok() {}
        assert!(q.free() < n);
        q.consume(n);
        assert!(
            q.push_frame(&msg, 0).is_ok(),
            "space at the front is reused"
        );
        let all = q.len();
        q.consume(all + 10);
        assert!(q.is_empty());
    }
}
