//! The device's clock: embassy-time's monotonic microseconds (TIM2 at 1 MHz, extended to
//! 64 bits by embassy's time driver).

use tether_firmware::Clock;

/// [`Clock`] over `embassy_time::Instant`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now_us(&self) -> u64 {
        embassy_time::Instant::now().as_micros()
    }
}
