//! The simulated board's clock: virtual (jumps when the board says so) or real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::clock::Clock;

/// A [`Clock`] shared by the board, its device and the link emulation.
#[derive(Clone, Debug)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    /// Microseconds set by [`SimClock::advance_to`].
    Virtual(AtomicU64),
    /// Microseconds since the board started.
    Real(Instant),
}

impl SimClock {
    /// A virtual clock at 0 µs that moves only through [`SimClock::advance_to`].
    pub fn new_virtual() -> Self {
        SimClock {
            inner: Arc::new(Inner::Virtual(AtomicU64::new(0))),
        }
    }

    /// A clock following the host's monotonic time from now.
    pub fn new_real() -> Self {
        SimClock {
            inner: Arc::new(Inner::Real(Instant::now())),
        }
    }

    /// Moves a virtual clock forward to `t_us` (never backward); no effect in real time.
    pub fn advance_to(&self, t_us: u64) {
        if let Inner::Virtual(now) = &*self.inner {
            now.fetch_max(t_us, Ordering::SeqCst);
        }
    }
}

impl Clock for SimClock {
    fn now_us(&self) -> u64 {
        match &*self.inner {
            Inner::Virtual(now) => now.load(Ordering::SeqCst),
            Inner::Real(start) => start.elapsed().as_micros() as u64,
        }
    }
}
