//! The rotary plant's encoder seam on an STM32 timer in encoder mode (×4 counting): the
//! 16-bit counter extended to a continuous count.

use core::convert::Infallible;

use embassy_stm32::timer::GeneralInstance4Channel;
use embassy_stm32::timer::qei::Qei;
use tether_firmware::plant::rotary_hal::{CountExtender, QuadratureEncoder};

/// A quadrature encoder on a timer's CH1/CH2 inputs.
pub struct TimerEncoder<'d, T: GeneralInstance4Channel> {
    qei: Qei<'d, T>,
    extender: CountExtender,
}

impl<'d, T: GeneralInstance4Channel> TimerEncoder<'d, T> {
    /// Counts from the timer's present value. It must be read at least every 32 767 counts
    /// (at 2048 counts per turn: 16 turns), which once per control period always is.
    pub fn new(qei: Qei<'d, T>) -> Self {
        TimerEncoder {
            qei,
            extender: CountExtender::new(1 << 16),
        }
    }
}

impl<T: GeneralInstance4Channel> QuadratureEncoder for TimerEncoder<'_, T> {
    type Error = Infallible;

    fn count(&mut self) -> Result<i32, Infallible> {
        Ok(self.extender.update(u32::from(self.qei.count())))
    }
}
