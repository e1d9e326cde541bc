//! Where a device is.

use std::fmt;

/// Where a device is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAddress {
    /// A local serial port (USB CDC-ACM, UART adapter or pseudo-terminal) at a baud rate in
    /// bits per second.
    Serial {
        /// Device path, e.g. `/dev/ttyACM0`.
        path: String,
        /// Line rate in bits per second (ignored by USB CDC devices, used by UARTs).
        baud: u32,
    },
    /// A serial port exposed over TCP in raw mode (e.g. by ser2net), as `host:port`.
    Tcp {
        /// `host:port`.
        endpoint: String,
    },
}

impl DeviceAddress {
    /// Parses a TCP address given as `host:port` or `tcp://host:port`.
    pub fn tcp(text: &str) -> Result<Self, String> {
        let endpoint = text.strip_prefix("tcp://").unwrap_or(text);
        match endpoint.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(DeviceAddress::Tcp {
                    endpoint: endpoint.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}` is not a TCP address; expected HOST:PORT such as 127.0.0.1:4000"
            )),
        }
    }

    /// Parses a command-line port argument: `tcp://host:port` is TCP, anything else a serial
    /// path.
    pub fn parse_port(text: &str, baud: u32) -> Result<Self, String> {
        if text.starts_with("tcp://") {
            Self::tcp(text)
        } else if text.is_empty() {
            Err("empty serial port path".to_string())
        } else {
            Ok(DeviceAddress::Serial {
                path: text.to_string(),
                baud,
            })
        }
    }
}

impl fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceAddress::Serial { path, .. } => f.write_str(path),
            DeviceAddress::Tcp { endpoint } => write!(f, "tcp://{endpoint}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_serial_addresses() {
        assert_eq!(
            DeviceAddress::parse_port("tcp://127.0.0.1:4000", 115_200),
            Ok(DeviceAddress::Tcp {
                endpoint: "127.0.0.1:4000".into()
            })
        );
        assert_eq!(
            DeviceAddress::tcp("rig-3:7001").map(|a| a.to_string()),
            Ok("tcp://rig-3:7001".into())
        );
        assert!(DeviceAddress::tcp("rig-3").is_err());
        assert!(DeviceAddress::tcp("rig:99999").is_err());
        assert_eq!(
            DeviceAddress::parse_port("/dev/ttyACM0", 9600),
            Ok(DeviceAddress::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 9600
            })
        );
    }
}
