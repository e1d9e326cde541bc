//! `tether ports`: the serial ports on this machine.

use std::process::ExitCode;

use serialport::SerialPortType;

pub fn ports() -> anyhow::Result<ExitCode> {
    let ports = serialport::available_ports()
        .map_err(|e| anyhow::anyhow!("cannot list serial ports: {e}"))?;
    if ports.is_empty() {
        println!(
            "no serial ports found (is the device plugged in? USB CDC devices show up as /dev/ttyACM*)"
        );
    }
    for port in ports {
        let kind = match port.port_type {
            SerialPortType::UsbPort(usb) => format!(
                "USB {:04x}:{:04x}{}{}{}",
                usb.vid,
                usb.pid,
                usb.manufacturer
                    .map(|m| format!(" {m}"))
                    .unwrap_or_default(),
                usb.product.map(|p| format!(" {p}")).unwrap_or_default(),
                usb.serial_number
                    .map(|s| format!(" (serial {s})"))
                    .unwrap_or_default(),
            ),
            SerialPortType::PciPort => "PCI".to_string(),
            SerialPortType::BluetoothPort => "Bluetooth".to_string(),
            SerialPortType::Unknown => "unknown".to_string(),
        };
        println!("{}\t{kind}", port.port_name);
    }
    Ok(ExitCode::SUCCESS)
}
