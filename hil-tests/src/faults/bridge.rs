//! A serial-over-TCP bridge (what ser2net does) in front of a simulated board, which can
//! cut the connection: the disconnect/reconnect fault.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tether_firmware::sim::HostEnd;

/// A running bridge; [`TcpBridge::stop`] (or dropping it) ends its thread.
pub struct TcpBridge {
    /// `host:port` the bridge listens on.
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBridge {
    /// Serves `board` (the host end of a simulated board's pipe) on a free local port, one
    /// client at a time. The client's connection is shut down each time the bytes forwarded
    /// from the device reach the next value of `cut_after_bytes` (ascending); the client may
    /// connect again. While no client is connected the device's output is discarded, as on a
    /// serial line nobody listens to.
    pub fn start(board: HostEnd, cut_after_bytes: Vec<u64>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU32::new(0));
        let (flag, counter) = (stop.clone(), cuts.clone());
        let thread = std::thread::Builder::new()
            .name("tcp bridge".into())
            .spawn(move || serve(listener, board, cut_after_bytes, &flag, &counter))?;
        Ok(TcpBridge {
            endpoint,
            stop,
            cuts,
            thread: Some(thread),
        })
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u32 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Stops the bridge and waits for its thread.
    pub fn stop(mut self) -> u32 {
        self.stop_inner();
        self.cuts()
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TcpBridge {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn serve(
    listener: TcpListener,
    mut board: HostEnd,
    cut_after: Vec<u64>,
    stop: &AtomicBool,
    cuts: &AtomicU32,
) {
    board.set_timeout(Duration::from_millis(1));
    let mut client: Option<TcpStream> = None;
    let mut forwarded = 0u64;
    let mut next_cut = cut_after.into_iter().peekable();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        if client.is_none()
            && let Ok((stream, _)) = listener.accept()
        {
            let ok = stream.set_nonblocking(false).is_ok()
                && stream.set_nodelay(true).is_ok()
                && stream
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .is_ok();
            if ok {
                client = Some(stream);
            }
        }
        // Device → client (or nowhere).
        let n = board.read(&mut buf).unwrap_or(0);
        if let Some(stream) = client.as_mut()
            && n > 0
        {
            if stream.write_all(&buf[..n]).is_err() {
                client = None;
            } else {
                forwarded += n as u64;
            }
        }
        if next_cut.next_if(|&at| forwarded >= at).is_some()
            && let Some(stream) = client.take()
        {
            let _ = stream.shutdown(Shutdown::Both);
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        // Client → device.
        if let Some(stream) = client.as_mut() {
            match stream.read(&mut buf) {
                Ok(0) => client = None,
                Ok(n) => {
                    if board.write_all(&buf[..n]).is_err() {
                        client = None;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => client = None,
            }
        } else if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
