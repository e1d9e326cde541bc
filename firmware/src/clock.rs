//! The time seam: a monotonic microsecond clock.

/// A monotonic clock counting microseconds since an arbitrary epoch (usually boot).
///
/// A board implements it over a hardware timer; the simulated board implements it in
/// virtual or real time; tests implement it with a counter they advance by hand.
///
/// Contract:
/// - [`Clock::now_us`] MUST be monotonic: a later call never returns a smaller value;
/// - it MUST NOT fail, block or panic, and SHOULD be cheap (the runtime reads it a few times
///   per control step);
/// - it MUST NOT wrap in the device's lifetime: 64 bits of microseconds last 584 000 years,
///   so extend a narrower hardware counter in software.
pub trait Clock {
    /// Microseconds since the clock's epoch.
    fn now_us(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
}
