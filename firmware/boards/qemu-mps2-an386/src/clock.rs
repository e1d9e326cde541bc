//! The device's [`Clock`]: SysTick in real time, or a virtual clock the board moves.

use core::cell::Cell;

use tether_firmware::Clock;

use crate::systick;

/// Where [`BoardClock`] takes its time from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// SysTick: the control loop keeps the plant's rate in (emulated) real time.
    SysTick,
    /// A count the board sets ([`BoardClock::advance_to`], [`BoardClock::advance_by`]):
    /// free-running episodes and the benchmark.
    Virtual,
}

/// A monotonic microsecond clock over a [`TimeSource`].
pub struct BoardClock {
    source: TimeSource,
    /// The virtual time, or the last SysTick reading handed out (keeps the contract's
    /// monotonicity even if a wrap were ever read late).
    us: Cell<u64>,
}

impl BoardClock {
    /// A clock at the source's current time (virtual clocks start at 0).
    pub fn new(source: TimeSource) -> Self {
        let start = match source {
            TimeSource::SysTick => systick::now_us(),
            TimeSource::Virtual => 0,
        };
        BoardClock {
            source,
            us: Cell::new(start),
        }
    }

    /// Moves a virtual clock forward to `t_us` (never backward); no effect on SysTick.
    pub fn advance_to(&self, t_us: u64) {
        if self.source == TimeSource::Virtual {
            self.us.set(self.us.get().max(t_us));
        }
    }

    /// Moves a virtual clock forward by `dt_us`; no effect on SysTick.
    pub fn advance_by(&self, dt_us: u64) {
        self.advance_to(self.us.get().saturating_add(dt_us));
    }
}

impl Clock for BoardClock {
    fn now_us(&self) -> u64 {
        if self.source == TimeSource::SysTick {
            self.us.set(self.us.get().max(systick::now_us()));
        }
        self.us.get()
    }
}
