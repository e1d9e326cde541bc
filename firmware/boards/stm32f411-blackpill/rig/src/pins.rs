//! Which pin of the STM32F411CEU6 does what on a tether rotary-pendulum rig.
//!
//! The board image's `main` configures exactly these pins; the README's wiring table is
//! checked against [`PINS`] by a test, so the two cannot drift apart.

/// One wired signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinAssignment {
    /// What the signal is, as the README's wiring table names it.
    pub signal: &'static str,
    /// The MCU pin, `P<port><number>`.
    pub pin: &'static str,
    /// The peripheral function on that pin (timer channel, I²C line, GPIO, USB).
    pub function: &'static str,
}

const fn pin(signal: &'static str, pin: &'static str, function: &'static str) -> PinAssignment {
    PinAssignment {
        signal,
        pin,
        function,
    }
}

/// Every signal of the rig. PWM at 20 kHz on TIM1 (above hearing, within every listed
/// bridge's limit); encoders on TIM3 and TIM4 in encoder mode (×4 counting); the
/// embassy-time driver uses TIM2, which needs no pin.
pub const PINS: [PinAssignment; 11] = [
    pin("motor PWM (bridge PWM or IN1)", "PA8", "TIM1_CH1"),
    pin("motor PWM B (two-PWM bridges: IN2)", "PA9", "TIM1_CH2"),
    pin("motor direction (PWM/DIR bridges)", "PB12", "GPIO out"),
    pin("bridge enable (pull-down to GND)", "PB13", "GPIO out"),
    pin("arm encoder A", "PA6", "TIM3_CH1"),
    pin("arm encoder B", "PA7", "TIM3_CH2"),
    pin("pendulum encoder A", "PB6", "TIM4_CH1"),
    pin("pendulum encoder B", "PB7", "TIM4_CH2"),
    pin(
        "AS5600 SCL (instead of the pendulum encoder)",
        "PB8",
        "I2C1_SCL",
    ),
    pin("AS5600 SDA", "PB9", "I2C1_SDA"),
    pin("limit switch (to GND, internal pull-up)", "PB14", "GPIO in"),
];

/// The USB full-speed data lines, wired to the board's USB-C connector.
pub const USB_PINS: [PinAssignment; 2] = [
    pin("USB D-", "PA11", "OTG_FS_DM"),
    pin("USB D+", "PA12", "OTG_FS_DP"),
];

/// Pins the Black Pill itself uses: the 25 MHz crystal, the LSE crystal, SWD, BOOT0's key,
/// the LED. No rig signal may sit on one.
pub const RESERVED: [&str; 8] = ["PH0", "PH1", "PC14", "PC15", "PA13", "PA14", "PA0", "PC13"];

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn no_pin_is_used_twice_or_reserved() {
        let mut seen = HashSet::new();
        for p in PINS.iter().chain(USB_PINS.iter()) {
            assert!(seen.insert(p.pin), "{} used twice", p.pin);
            assert!(!RESERVED.contains(&p.pin), "{} is reserved", p.pin);
        }
    }

    /// Timer channels on these pins are alternate functions the STM32F411's datasheet
    /// (table 9) lists: AF1 for TIM1, AF2 for TIM3/TIM4, AF4 for I2C1.
    #[test]
    fn timer_channels_are_the_datasheet_alternate_functions() {
        let datasheet = [
            ("PA8", "TIM1_CH1"),
            ("PA9", "TIM1_CH2"),
            ("PA6", "TIM3_CH1"),
            ("PA7", "TIM3_CH2"),
            ("PB6", "TIM4_CH1"),
            ("PB7", "TIM4_CH2"),
            ("PB8", "I2C1_SCL"),
            ("PB9", "I2C1_SDA"),
        ];
        for p in PINS.iter().filter(|p| !p.function.starts_with("GPIO")) {
            assert!(datasheet.contains(&(p.pin, p.function)), "{p:?}");
        }
    }

    /// The README's "Your own rig" wiring table lists every signal with its pin.
    #[test]
    fn readme_wiring_table_matches() {
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../../README.md");
        let text = std::fs::read_to_string(readme).expect("README.md");
        for p in PINS.iter().chain(USB_PINS.iter()) {
            let row = std::format!("| {} | {} | {} |", p.signal, p.pin, p.function);
            assert!(text.contains(&row), "README lacks the row {row}");
        }
    }
}
