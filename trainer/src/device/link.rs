//! Frames over a byte stream: the host end of a device link.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use tether_shared::frame::{self, DecoderStats, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::{DeviceMessage, HostMessage};

use super::{ByteStream, DeviceError};

/// Sends [`HostMessage`]s and receives [`DeviceMessage`]s over one byte stream, counting
/// what the decoder had to throw away.
pub struct DeviceLink {
    name: String,
    stream: Box<dyn ByteStream>,
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    bytes_received: u64,
    reopen: Option<Reopen>,
}

/// Opens the device's byte stream again (see [`DeviceLink::with_reopen`]).
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn ByteStream>, DeviceError> + Send>;

impl DeviceLink {
    /// Wraps an open stream; `name` identifies the device in every error.
    pub fn new(name: impl Into<String>, stream: Box<dyn ByteStream>) -> Self {
        DeviceLink {
            name: name.into(),
            stream,
            decoder: Box::new(FrameDecoder::new()),
            rx: vec![0; 4096],
            rx_start: 0,
            rx_end: 0,
            tx: vec![0; MAX_FRAME_LEN],
            bytes_received: 0,
            reopen: None,
        }
    }

    /// Lets [`DeviceLink::reopen`] open the stream again with `reopen` (e.g. the same serial
    /// port or TCP address) after the device dropped off.
    pub fn with_reopen(mut self, reopen: Reopen) -> Self {
        self.reopen = Some(reopen);
        self
    }

    /// Forgets buffered input and, when the link knows how, closes the stream and opens it
    /// again. Without a way to reopen, the same stream is kept.
    pub fn reopen(&mut self) -> Result<(), DeviceError> {
        self.rx_start = 0;
        self.rx_end = 0;
        self.decoder.reset();
        if let Some(open) = self.reopen.as_mut() {
            // Close first: a single-client server (ser2net) refuses a second connection.
            self.stream = Box::new(io::empty());
            self.stream = open()?;
        }
        Ok(())
    }

    /// Bytes the link holds for decoding, at most (a fixed buffer: input never piles up).
    pub fn buffer_capacity(&self) -> usize {
        self.rx.len()
    }

    /// The device's name (its address, or the simulated board's label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frame-level counters: good frames, CRC failures, overflows, undecodable frames.
    pub fn stats(&self) -> DecoderStats {
        self.decoder.stats()
    }

    /// The protocol version announced by a `Hello` this build could not decode (a device
    /// speaking another protocol version), if one came.
    pub fn foreign_hello_version(&self) -> Option<u16> {
        self.decoder.foreign_hello_version()
    }

    /// Bytes received so far, good or bad.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Whether bytes already read hold the end of a frame (its `0x00`): the next
    /// [`DeviceLink::recv`] has a frame to decode without reading the stream (it may still
    /// turn out to be damaged).
    pub fn holds_a_frame_end(&self) -> bool {
        self.rx[self.rx_start..self.rx_end].contains(&0)
    }

    /// Frames thrown away so far (broken COBS, CRC failures, overflows, undecodable).
    pub fn rejected_frames(&self) -> u64 {
        u64::from(self.decoder.stats().errors())
    }

    /// Encodes and sends one message.
    pub fn send(&mut self, message: &HostMessage) -> Result<(), DeviceError> {
        let frame = frame::encode(message, &mut self.tx).map_err(|e| DeviceError::Io {
            device: self.name.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let result = self
            .stream
            .write_all(frame)
            .and_then(|()| self.stream.flush());
        result.map_err(|e| io_error(&self.name, e))
    }

    /// Waits up to `timeout` for the next valid message; `Ok(None)` when none came.
    /// Corrupted frames are skipped (and counted in [`DeviceLink::stats`]).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<DeviceMessage>, DeviceError> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.rx_start < self.rx_end {
                let mut input = &self.rx[self.rx_start..self.rx_end];
                let before = input.len();
                let decoded = self.decoder.decode_next::<DeviceMessage>(&mut input);
                self.rx_start += before - input.len();
                match decoded {
                    Some(Ok(message)) => return Ok(Some(message)),
                    Some(Err(e)) => tracing::debug!(device = %self.name, "dropped frame: {e}"),
                    None => break,
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match self.stream.read(&mut self.rx) {
                Ok(0) => {
                    return Err(DeviceError::Disconnected {
                        device: self.name.clone(),
                    });
                }
                Ok(n) => {
                    self.rx_start = 0;
                    self.rx_end = n;
                    self.bytes_received += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io_error(&self.name, e)),
            }
        }
    }
}

/// Maps an I/O error to a disconnect when that is what it means.
fn io_error(device: &str, e: io::Error) -> DeviceError {
    // EIO is what a pty or a USB CDC port gives once the other side is gone.
    const EIO: i32 = 5;
    let gone = matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    ) || e.raw_os_error() == Some(EIO);
    if gone {
        DeviceError::Disconnected {
            device: device.to_string(),
        }
    } else {
        DeviceError::Io {
            device: device.to_string(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tether_shared::message::{DeviceState, Heartbeat};

    use super::*;

    /// A stream whose reads return the chunks pushed to it, one per read (timing out when
    /// there is none); writes are swallowed.
    #[derive(Clone, Default)]
    struct Chunks(Arc<Mutex<VecDeque<Vec<u8>>>>);

    impl Chunks {
        fn push(&self, bytes: &[u8]) {
            self.0.lock().unwrap().push_back(bytes.to_vec());
        }
    }

    impl io::Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let chunk = self.0.lock().unwrap().pop_front();
            let chunk = chunk.ok_or_else(|| io::Error::from(ErrorKind::TimedOut))?;
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    impl io::Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn heartbeat(uptime_us: u32) -> Vec<u8> {
        let message = DeviceMessage::Heartbeat(Heartbeat {
            uptime_us,
            state: DeviceState::Idle,
            last_host_sequence: 0,
        });
        let mut buf = [0u8; MAX_FRAME_LEN];
        frame::encode(&message, &mut buf).unwrap().to_vec()
    }

    /// Two frames read at once: after the first is decoded the second is held; a frame's
    /// first half is not a frame end.
    #[test]
    fn a_frame_end_is_held_only_when_a_whole_frame_was_read() {
        let chunks = Chunks::default();
        let mut link = DeviceLink::new("test", Box::new(chunks.clone()));
        assert!(!link.holds_a_frame_end());
        chunks.push(&[heartbeat(1), heartbeat(2)].concat());
        let quick = Duration::from_millis(1);
        assert!(link.recv(quick).unwrap().is_some());
        assert!(link.holds_a_frame_end());
        assert!(link.recv(quick).unwrap().is_some());
        assert!(!link.holds_a_frame_end());

        let third = heartbeat(3);
        let (front, back) = third.split_at(third.len() / 2);
        chunks.push(front);
        assert!(link.recv(quick).unwrap().is_none());
        assert!(!link.holds_a_frame_end());
        chunks.push(back);
        assert!(link.recv(quick).unwrap().is_some());
        assert!(!link.holds_a_frame_end());
    }
}
