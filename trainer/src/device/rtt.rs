//! Round-trip time and the retransmission timeout that follows it: TCP's rule (RFC 6298).
//!
//! Each answered request that was sent once gives a sample R (Karn's rule: a request sent
//! again gives none, its answer could belong to either copy). The first sample sets the
//! smoothed round-trip time SRTT = R and its variation RTTVAR = R / 2; later ones update
//! RTTVAR ← ¾·RTTVAR + ¼·|SRTT − R|, then SRTT ← ⅞·SRTT + ⅛·R. The timeout is
//! RTO = SRTT + max(G, 4·RTTVAR), clamped to a floor and a ceiling; before any sample it is
//! the initial value. A request that timed out is sent again with the timeout doubled each
//! time (exponential backoff), a few times at most and never past the ceiling.
//!
//! So a USB or in-memory link whose answers come in a fraction of a millisecond retries
//! within the floor (milliseconds), and a 9600-baud radio link whose frames take a second
//! to cross is given seconds, without anyone configuring either.

use std::time::Duration;

/// Times a request's timeout is doubled at most by resending it.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 3;

/// Clock granularity `G` of RFC 6298: the least spread a timeout allows for.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Where the retransmission timeout may go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RtoBounds {
    /// The shortest timeout, whatever the samples say.
    pub floor: Duration,
    /// The longest timeout, backoff included.
    pub ceiling: Duration,
    /// The timeout before the first sample.
    pub initial: Duration,
}

impl Default for RtoBounds {
    /// A 1 ms floor, a 5 s ceiling and 1 s before the first sample (RFC 6298's initial
    /// value).
    fn default() -> Self {
        RtoBounds {
            floor: Duration::from_millis(1),
            ceiling: Duration::from_secs(5),
            initial: Duration::from_secs(1),
        }
    }
}

/// The smoothed round-trip estimate of one link.
#[derive(Clone, Debug, PartialEq)]
pub struct RttEstimator {
    bounds: RtoBounds,
    /// (SRTT, RTTVAR) in seconds, once a sample came.
    smoothed: Option<(f64, f64)>,
    samples: u64,
}

impl RttEstimator {
    /// No sample yet: the timeout is `bounds.initial` (within floor and ceiling).
    pub fn new(bounds: RtoBounds) -> Self {
        RttEstimator {
            bounds,
            smoothed: None,
            samples: 0,
        }
    }

    /// Takes one round-trip sample (of a request sent once).
    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        self.smoothed = Some(match self.smoothed {
            None => (r, r / 2.0),
            Some((srtt, rttvar)) => {
                let rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
                (0.875 * srtt + 0.125 * r, rttvar)
            }
        });
        self.samples += 1;
    }

    /// The retransmission timeout for a first send.
    pub fn rto(&self) -> Duration {
        let raw = match self.smoothed {
            None => self.bounds.initial,
            Some((srtt, rttvar)) => {
                let spread = (4.0 * rttvar).max(GRANULARITY.as_secs_f64());
                Duration::from_secs_f64(srtt + spread)
            }
        };
        raw.clamp(
            self.bounds.floor,
            self.bounds.ceiling.max(self.bounds.floor),
        )
    }

    /// The timeout for send number `attempt` of a request (0: the first): the RTO doubled
    /// `attempt` times — at most [`MAX_BACKOFF_DOUBLINGS`] times, and at most the ceiling.
    ///
    /// RFC 6298 backs off without limit because on the Internet a lost packet usually means
    /// congestion. On a serial line a lost frame means damaged bytes, and waiting longer
    /// does not make the next copy more likely to arrive; a few doublings still cover an
    /// estimate that was too short (a slow line whose long frames took longer than the
    /// short ones the estimate came from).
    pub fn timeout(&self, attempt: u32) -> Duration {
        self.backoff(attempt.min(MAX_BACKOFF_DOUBLINGS))
    }

    /// The timeout for send number `attempt` of a command whose answer may wait behind
    /// everything the device still has to send: the RTO doubled `attempt` times without
    /// the [`MAX_BACKOFF_DOUBLINGS`] limit (RFC 6298's backoff), at most the ceiling. A slow
    /// line's backlog (a 4 KiB queue takes 0.36 s at 115200 baud) can hold an
    /// acknowledgement far longer than the round trips the estimate was measured on.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.bounds.ceiling.max(self.bounds.floor);
        let factor = 1u32 << attempt.min(20);
        self.rto().saturating_mul(factor).min(ceiling)
    }

    /// Smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.smoothed.map(|(s, _)| Duration::from_secs_f64(s))
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The bounds.
    pub fn bounds(&self) -> RtoBounds {
        self.bounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    fn estimator() -> RttEstimator {
        RttEstimator::new(RtoBounds {
            floor: ms(1.0),
            ceiling: ms(60_000.0),
            initial: ms(1000.0),
        })
    }

    #[test]
    fn before_any_sample_the_initial_timeout_holds() {
        let e = estimator();
        assert_eq!(e.rto(), ms(1000.0));
        assert_eq!(e.srtt(), None);
        assert_eq!(e.timeout(2), ms(4000.0));
        assert_eq!(e.timeout(3), ms(8000.0));
        assert_eq!(e.timeout(9), ms(8000.0), "three doublings at most");
    }

    /// RFC 6298 by hand: R = 100 ms → SRTT 100, RTTVAR 50, RTO 100 + 200 = 300 ms; then
    /// R = 200 ms → RTTVAR = 0.75·50 + 0.25·100 = 62.5, SRTT = 87.5 + 25 = 112.5,
    /// RTO = 112.5 + 250 = 362.5 ms.
    #[test]
    fn samples_follow_the_rfc_6298_rule() {
        let mut e = estimator();
        e.sample(ms(100.0));
        assert!(
            (e.rto().as_secs_f64() - 0.300).abs() < 1e-9,
            "{:?}",
            e.rto()
        );
        e.sample(ms(200.0));
        assert!((e.srtt().unwrap().as_secs_f64() - 0.1125).abs() < 1e-9);
        assert!(
            (e.rto().as_secs_f64() - 0.3625).abs() < 1e-9,
            "{:?}",
            e.rto()
        );
        assert_eq!(e.samples(), 2);
    }

    #[test]
    fn a_steady_fast_link_settles_near_its_round_trip_and_the_floor_holds() {
        let mut e = RttEstimator::new(RtoBounds {
            floor: ms(10.0),
            ..RtoBounds::default()
        });
        for _ in 0..200 {
            e.sample(ms(0.2));
        }
        // RTTVAR decays to ~0: SRTT + G = 1.2 ms, below the floor.
        assert_eq!(e.rto(), ms(10.0));
        let mut fine = estimator();
        for _ in 0..200 {
            fine.sample(ms(3.0));
        }
        assert!(
            (fine.rto().as_secs_f64() - 0.004).abs() < 1e-4,
            "{:?}",
            fine.rto()
        );
    }

    #[test]
    fn a_slow_link_is_given_its_time_and_backoff_stops_at_the_ceiling() {
        let mut e = RttEstimator::new(RtoBounds {
            ceiling: ms(5000.0),
            ..RtoBounds::default()
        });
        e.sample(ms(1200.0));
        assert!(e.rto() >= ms(2400.0), "{:?}", e.rto());
        assert_eq!(e.timeout(1), ms(5000.0));
        assert_eq!(e.timeout(40), ms(5000.0), "no overflow");
    }

    #[test]
    fn a_command_backs_off_without_the_doubling_limit_up_to_the_ceiling() {
        let e = estimator();
        assert_eq!(e.backoff(0), ms(1000.0));
        assert_eq!(e.backoff(4), ms(16_000.0), "past three doublings");
        assert_eq!(e.backoff(40), ms(60_000.0), "the ceiling, no overflow");
    }
}
