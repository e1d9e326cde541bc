//! Opening a device address as a byte stream.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{DeviceAddress, DeviceError};

/// A bidirectional byte stream to a device. Reads return within the stream's read timeout:
/// with data, or with an error of kind `TimedOut` or `WouldBlock` when nothing arrived;
/// `Ok(0)` means the peer closed the stream.
pub trait ByteStream: Read + Write + Send {}

impl<T: Read + Write + Send> ByteStream for T {}

/// How long one read waits for bytes before the driver checks its deadlines again: also how
/// late a retransmission timeout may fire on a silent link, so no longer than the RTO floor
/// (an idle device costs a thousand empty reads a second).
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Opens `address`, mapping failures to errors that tell the user what to do.
pub fn open(address: &DeviceAddress) -> Result<Box<dyn ByteStream>, DeviceError> {
    match address {
        DeviceAddress::Serial { path, baud } => open_serial(path, *baud),
        DeviceAddress::Tcp { endpoint } => open_tcp(endpoint),
    }
}

fn open_serial(path: &str, baud: u32) -> Result<Box<dyn ByteStream>, DeviceError> {
    let port = path.to_string();
    match serialport::new(path, baud)
        .timeout(POLL_INTERVAL)
        .open_native()
    {
        Ok(stream) => Ok(Box::new(stream)),
        Err(e) => Err(match e.kind {
            serialport::ErrorKind::NoDevice => DeviceError::PortBusy { port },
            serialport::ErrorKind::Io(io::ErrorKind::NotFound) => DeviceError::PortMissing { port },
            serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
                DeviceError::PermissionDenied { port }
            }
            _ if !std::path::Path::new(path).exists() => DeviceError::PortMissing { port },
            kind => DeviceError::Io {
                device: port,
                source: io::Error::other(format!("{} ({kind:?})", e.description)),
            },
        }),
    }
}

fn open_tcp(endpoint: &str) -> Result<Box<dyn ByteStream>, DeviceError> {
    let connect = |endpoint: &str| -> io::Result<TcpStream> {
        let stream = TcpStream::connect(endpoint)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL_INTERVAL))?;
        Ok(stream)
    };
    connect(endpoint)
        .map(|s| Box::new(s) as Box<dyn ByteStream>)
        .map_err(|source| DeviceError::TcpConnect {
            endpoint: endpoint.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_port_says_so_and_hints_at_tether_ports() {
        let err = open(&DeviceAddress::Serial {
            path: "/dev/tether-does-not-exist".into(),
            baud: 115_200,
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("tether ports"), "{err}");
    }

    #[test]
    fn refused_tcp_connection_names_the_endpoint() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let endpoint = format!("127.0.0.1:{port}");
        let err = open(&DeviceAddress::Tcp {
            endpoint: endpoint.clone(),
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains(&endpoint) && err.contains("ser2net"), "{err}");
    }
}
