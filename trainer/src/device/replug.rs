//! Getting a device back after its port vanished (a USB cable pulled and plugged in again,
//! a rig rebooting): its address is opened again and again until it answers, within a
//! grace period — at the same path, or, for a USB device, at whatever path now carries the
//! same USB serial number (a replugged board may come back as `/dev/ttyACM1`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::link::Reopen;
use super::transport;
use super::{ByteStream, DeviceAddress, DeviceError};

/// Pause between two attempts at opening a vanished port.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A serial port the system lists: its path and, for a USB device, its serial number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedPort {
    /// Device path, e.g. `/dev/ttyACM0`.
    pub path: String,
    /// The USB serial number, if the port is a USB device that has one.
    pub usb_serial: Option<String>,
}

/// Lists the system's serial ports.
pub type PortLister = Box<dyn Fn() -> Vec<ListedPort> + Send>;

/// The system's serial ports, from `serialport`'s enumeration (sysfs on Linux).
pub fn system_ports() -> Vec<ListedPort> {
    serialport::available_ports()
        .unwrap_or_default()
        .into_iter()
        .map(|p| ListedPort {
            usb_serial: match p.port_type {
                serialport::SerialPortType::UsbPort(usb) => usb.serial_number,
                _ => None,
            },
            path: p.port_name,
        })
        .collect()
}

/// Reopens one device address within a grace period.
pub struct Replug {
    address: DeviceAddress,
    grace: Duration,
    /// The USB serial number the port had when it was first opened.
    usb_serial: Option<String>,
    ports: PortLister,
}

impl Replug {
    /// Reopens `address` for up to `grace`, looking ports up with `ports`; a serial path's
    /// USB serial number is noted now, while the device is there.
    pub fn new(address: DeviceAddress, grace: Duration, ports: PortLister) -> Self {
        let usb_serial = match &address {
            DeviceAddress::Serial { path, .. } => serial_number_of(path, &ports()),
            DeviceAddress::Tcp { .. } => None,
        };
        Replug {
            address,
            grace,
            usb_serial,
            ports,
        }
    }

    /// The USB serial number noted for the port, if any.
    pub fn usb_serial(&self) -> Option<&str> {
        self.usb_serial.as_deref()
    }

    /// Opens the address, or another path with the same USB serial number, trying until the
    /// grace period has passed; then the last failure.
    pub fn reopen(&mut self) -> Result<Box<dyn ByteStream>, DeviceError> {
        let deadline = Instant::now() + self.grace;
        loop {
            let error = match self.try_open() {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            if Instant::now() + RETRY_INTERVAL > deadline {
                return Err(error);
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }

    fn try_open(&self) -> Result<Box<dyn ByteStream>, DeviceError> {
        let error = match transport::open(&self.address) {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        let (Some(serial), DeviceAddress::Serial { path, baud }) =
            (&self.usb_serial, &self.address)
        else {
            return Err(error);
        };
        let moved = (self.ports)()
            .into_iter()
            .find(|p| p.usb_serial.as_deref() == Some(serial) && &p.path != path);
        match moved {
            Some(port) => {
                tracing::info!("{path} came back as {} (USB serial {serial})", port.path);
                transport::open(&DeviceAddress::Serial {
                    path: port.path,
                    baud: *baud,
                })
            }
            None => Err(error),
        }
    }

    /// As the reopen hook of a [`super::DeviceLink`].
    pub fn into_reopen(mut self) -> Reopen {
        Box::new(move || self.reopen())
    }
}

/// The reopen hook for a real device at `address`: [`Replug`] over the system's ports.
pub fn reopener(address: &DeviceAddress, grace: Duration) -> Reopen {
    Replug::new(address.clone(), grace, Box::new(system_ports)).into_reopen()
}

/// The USB serial number of the listed port at `path` (symbolic links such as
/// `/dev/serial/by-id/...` resolved).
fn serial_number_of(path: &str, ports: &[ListedPort]) -> Option<String> {
    let resolved = Path::new(path).canonicalize().ok();
    ports
        .iter()
        .find(|p| {
            p.path == path
                || resolved
                    .as_deref()
                    .is_some_and(|r| Path::new(&p.path).canonicalize().ok().as_deref() == Some(r))
        })
        .and_then(|p| p.usb_serial.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn serial(path: &str) -> DeviceAddress {
        DeviceAddress::Serial {
            path: path.into(),
            baud: 115_200,
        }
    }

    fn lister(ports: Arc<Mutex<Vec<ListedPort>>>) -> PortLister {
        Box::new(move || ports.lock().unwrap().clone())
    }

    #[test]
    fn a_port_that_stays_away_fails_after_the_grace_period_naming_it() {
        let ports = Arc::new(Mutex::new(Vec::new()));
        let mut replug = Replug::new(
            serial("/dev/tether-gone"),
            Duration::from_millis(350),
            lister(ports),
        );
        assert_eq!(replug.usb_serial(), None);
        let started = Instant::now();
        let err = replug.reopen().err().expect("never comes back");
        let waited = started.elapsed();
        assert!(
            matches!(&err, DeviceError::PortMissing { port } if port == "/dev/tether-gone"),
            "{err}"
        );
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    /// The serial number noted at the start finds the device at its new path (here a
    /// pseudo-terminal standing in for `/dev/ttyACM1`).
    #[test]
    fn a_usb_device_is_found_again_by_its_serial_number_at_another_path() {
        let old = "/dev/tether-ttyACM0-gone";
        let ports = Arc::new(Mutex::new(vec![ListedPort {
            path: old.into(),
            usb_serial: Some("TETHER-0042".into()),
        }]));
        let mut replug = Replug::new(serial(old), Duration::from_secs(2), lister(ports.clone()));
        assert_eq!(replug.usb_serial(), Some("TETHER-0042"));
        let (_master, slave) = serialport::TTYPort::pair().expect("a pty pair");
        let new_path = serialport::SerialPort::name(&slave).expect("pty path");
        *ports.lock().unwrap() = vec![
            ListedPort {
                path: "/dev/ttyUSB7".into(),
                usb_serial: Some("OTHER".into()),
            },
            ListedPort {
                path: new_path,
                usb_serial: Some("TETHER-0042".into()),
            },
        ];
        assert!(replug.reopen().is_ok());
    }

    #[test]
    fn serial_numbers_are_looked_up_through_symbolic_links() {
        let dir = std::env::temp_dir().join(format!("tether-replug-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("ttyACM9");
        std::fs::write(&target, b"").unwrap();
        let link = dir.join("by-id");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let ports = [ListedPort {
            path: target.to_string_lossy().into_owned(),
            usb_serial: Some("SN1".into()),
        }];
        assert_eq!(
            serial_number_of(&link.to_string_lossy(), &ports).as_deref(),
            Some("SN1")
        );
        assert_eq!(serial_number_of("/dev/none", &ports), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
