//! How the board presents itself on USB: a CDC-ACM device (`/dev/ttyACM*` on Linux) whose
//! serial number is the chip's 96-bit unique ID, so `tether ports` tells two rigs apart.

/// USB vendor ID: pid.codes, the open-source hardware vendor ID.
pub const VENDOR_ID: u16 = 0x1209;
/// USB product ID: pid.codes' test PID. Replace both with your own before shipping a
/// product; for a lab rig they identify tether's firmware to `tether ports`.
pub const PRODUCT_ID: u16 = 0x0001;
/// Manufacturer string.
pub const MANUFACTURER: &str = "tether";
/// Product string.
pub const PRODUCT: &str = "tether rotary pendulum (STM32F411 Black Pill)";
/// Largest packet of the CDC data endpoints and of endpoint 0, bytes (USB full speed).
pub const MAX_PACKET: u16 = 64;
/// Current drawn from the bus, mA (the board alone; the motor has its own supply).
pub const MAX_POWER_MA: u16 = 100;

/// Length of [`serial_number`]'s text.
pub const SERIAL_LEN: usize = 24;

/// The serial number for a chip whose unique ID (the 12 bytes at `0x1FFF_7A10`, lowest
/// address first) is `uid`: 24 upper-case hex digits, two per byte in that order.
pub fn serial_number(uid: &[u8; 12]) -> [u8; SERIAL_LEN] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; SERIAL_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(uid) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0F)];
    }
    out
}

/// [`serial_number`] as text (it is always ASCII).
pub fn serial_str(serial: &[u8; SERIAL_LEN]) -> &str {
    core::str::from_utf8(serial).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_the_unique_id_in_hex() {
        let uid = [
            0x32, 0x00, 0x4A, 0x00, 0x0F, 0x51, 0x34, 0x38, 0x36, 0x39, 0x38, 0xFF,
        ];
        let serial = serial_number(&uid);
        assert_eq!(serial_str(&serial), "32004A000F513438363938FF");
        assert_ne!(
            serial_number(&[0; 12]),
            serial_number(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
    }

    #[test]
    fn strings_fit_usb_descriptors() {
        // A string descriptor holds at most 126 UTF-16 code units.
        for s in [MANUFACTURER, PRODUCT] {
            assert!(!s.is_empty() && s.is_ascii() && s.len() <= 126, "{s}");
        }
        assert_eq!(MAX_PACKET, 64, "full-speed bulk endpoints");
    }
}
