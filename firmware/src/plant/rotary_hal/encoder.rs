//! The angle-sensor seam: a position in counts that never wraps.
//!
//! [`QuadratureEncoder`] is the one trait the rotary plant reads both angles through. A
//! timer in encoder mode implements it with a [`CountExtender`] over its 16-bit counter (the
//! Black Pill board does so for TIM3/TIM4); an AS5600 magnetic sensor over I²C implements it
//! through [`As5600Encoder`] (feature `as5600`), whose 12-bit absolute angle is extended the
//! same way.

/// A rotary position sensor read in counts.
///
/// Contract: [`QuadratureEncoder::count`] returns the position in counts from an arbitrary
/// origin, continuous over the sensor's life (no wrap at a full turn or at a hardware
/// counter's width); a read that fails returns an error and never panics. It is read at
/// least once per control period, often enough for any extension to see less than half a
/// counter range between two reads.
pub trait QuadratureEncoder {
    /// Why a read failed (a bus error for I²C sensors; [`core::convert::Infallible`] for a
    /// timer's counter).
    type Error;

    /// The position, counts.
    fn count(&mut self) -> Result<i32, Self::Error>;
}

/// Extends a wrapping hardware reading (a 16-bit timer counter, a 12-bit absolute angle) to
/// a continuous `i32` count: each reading's difference to the previous one is taken modulo
/// the counter's range, as the shortest way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountExtender {
    range: u32,
    last: Option<u32>,
    total: i32,
}

impl CountExtender {
    /// An extender for readings in `0..range` (`range` ≥ 2; 65 536 for a 16-bit timer, 4096
    /// for the AS5600).
    pub const fn new(range: u32) -> Self {
        CountExtender {
            range: if range < 2 { 2 } else { range },
            last: None,
            total: 0,
        }
    }

    /// The continuous count after `raw` (taken modulo the range). The first reading sets
    /// the origin's offset: it is returned as is.
    pub fn update(&mut self, raw: u32) -> i32 {
        let raw = raw % self.range;
        let Some(last) = self.last.replace(raw) else {
            self.total = raw as i32;
            return self.total;
        };
        let forward = (raw + self.range - last) % self.range;
        let step = if forward >= self.range.div_ceil(2) {
            forward as i32 - self.range as i32
        } else {
            forward as i32
        };
        self.total = self.total.wrapping_add(step);
        self.total
    }
}

/// An AS5600 magnetic angle sensor (4096 counts per turn) through the `as5600` driver crate.
#[cfg(feature = "as5600")]
pub struct As5600Encoder<I> {
    sensor: as5600::As5600<I>,
    extender: CountExtender,
}

/// Counts per revolution of the AS5600's raw angle.
pub const AS5600_COUNTS_PER_REV: u32 = 4096;

#[cfg(feature = "as5600")]
impl<I, E> As5600Encoder<I>
where
    I: embedded_hal::i2c::I2c<Error = E>,
{
    /// The sensor at its fixed address 0x36 on `bus`.
    pub fn new(bus: I) -> Self {
        As5600Encoder {
            sensor: as5600::As5600::new(bus),
            extender: CountExtender::new(AS5600_COUNTS_PER_REV),
        }
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.sensor.release()
    }
}

#[cfg(feature = "as5600")]
impl<I, E> QuadratureEncoder for As5600Encoder<I>
where
    I: embedded_hal::i2c::I2c<Error = E>,
{
    type Error = as5600::error::Error<E>;

    fn count(&mut self) -> Result<i32, Self::Error> {
        let raw = self.sensor.raw_angle()?;
        Ok(self.extender.update(u32::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sixteen_bit_wrap_both_ways() {
        let mut e = CountExtender::new(65_536);
        assert_eq!(e.update(65_530), 65_530);
        assert_eq!(e.update(4), 65_540);
        assert_eq!(e.update(65_534), 65_534);
        assert_eq!(e.update(0), 65_536);
    }

    proptest! {
        /// Any path of steps smaller than half the range is recovered exactly.
        #[test]
        fn recovers_any_slow_path(start in -100_000i32..100_000,
                                  steps in proptest::collection::vec(-2047i32..2048, 1..200)) {
            let range = 4096u32;
            let mut e = CountExtender::new(range);
            let origin = e.update(start.rem_euclid(range as i32) as u32);
            let mut truth = start;
            for s in steps {
                truth += s;
                let got = e.update(truth.rem_euclid(range as i32) as u32);
                prop_assert_eq!(got - origin, truth - start);
            }
        }
    }

    #[cfg(feature = "as5600")]
    #[test]
    fn as5600_reads_the_raw_angle_register_and_extends_it() {
        extern crate std;
        use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
        use std::vec;
        // RAW ANGLE is register 0x0C (high byte) and 0x0D, 12 bits.
        let expectations = [
            Transaction::write_read(0x36, vec![0x0C], vec![0x0F, 0xFE]),
            Transaction::write_read(0x36, vec![0x0C], vec![0x00, 0x03]),
        ];
        let mut sensor = As5600Encoder::new(Mock::new(&expectations));
        assert_eq!(sensor.count().unwrap(), 4094);
        assert_eq!(sensor.count().unwrap(), 4099);
        sensor.release().done();
    }
}
