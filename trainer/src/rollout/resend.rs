//! The host's side of selective repeat: which lost stretches it asked the device for, when,
//! and how often; when to ask again and when to stop asking.
//!
//! A stretch is asked for as soon as it is known to be missing (a later step or episode
//! arrived: the line delivers in order, so nothing else is still on its way), again each
//! time the retransmission timeout passes (doubled per request), and given up after the
//! configured number of requests — or at once when the device answers that it no longer
//! holds it. Requests are keyed by their episode and first step, so the state is bounded by
//! the stretches missing at once, which the round bounds in turn.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tether_shared::message::StepRange;

/// One stretch asked for.
#[derive(Clone, Copy, Debug)]
struct Asked {
    to_step: u32,
    last_sent: Instant,
    sends: u32,
}

/// What to do about the missing stretches now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Due {
    /// Requests to send now.
    pub send: Vec<StepRange>,
    /// Stretches asked for too often: stop waiting for them.
    pub give_up: Vec<StepRange>,
}

/// Outstanding resend requests of one round.
#[derive(Debug)]
pub struct ResendTracker {
    asked: HashMap<(u32, u32), Asked>,
    max_sends: u32,
    requests: u64,
}

impl ResendTracker {
    /// Each stretch is asked for at most `max_sends` times (0: never; every gap is cut at
    /// once).
    pub fn new(max_sends: u32) -> Self {
        ResendTracker {
            asked: HashMap::new(),
            max_sends,
            requests: 0,
        }
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Decides, for the stretches `missing` now, which requests go out (new stretches, and
    /// those unanswered for `timeout(sends so far)`) and which stretches to give up.
    /// Requests for stretches no longer missing are forgotten.
    pub fn due(
        &mut self,
        missing: &[StepRange],
        now: Instant,
        timeout: impl Fn(u32) -> Duration,
    ) -> Due {
        self.asked.retain(|&(episode, from), _| {
            missing
                .iter()
                .any(|m| m.episode == episode && m.from_step == from)
        });
        let mut due = Due::default();
        for range in missing {
            let key = (range.episode, range.from_step);
            match self.asked.get_mut(&key) {
                None if self.max_sends == 0 => due.give_up.push(*range),
                None => {
                    self.asked.insert(
                        key,
                        Asked {
                            to_step: range.to_step,
                            last_sent: now,
                            sends: 1,
                        },
                    );
                    due.send.push(*range);
                }
                Some(asked) => {
                    asked.to_step = range.to_step;
                    if now < asked.last_sent + timeout(asked.sends - 1) {
                        continue;
                    }
                    if asked.sends >= self.max_sends {
                        due.give_up.push(*range);
                    } else {
                        asked.sends += 1;
                        asked.last_sent = now;
                        due.send.push(*range);
                    }
                }
            }
        }
        self.requests += due.send.len() as u64;
        due
    }

    /// Step `step` of `episode` arrived: if it answers a request sent only once, the round
    /// trip it took (Karn's rule: a repeated request's answer could belong to any copy).
    pub fn answered(&self, episode: u32, step: u32, now: Instant) -> Option<Duration> {
        self.asked
            .iter()
            .find(|((e, from), a)| *e == episode && *from <= step && step < a.to_step)
            .filter(|(_, a)| a.sends == 1)
            .map(|(_, a)| now.saturating_duration_since(a.last_sent))
    }

    /// Stretches currently asked for.
    pub fn outstanding(&self) -> usize {
        self.asked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(episode: u32, from_step: u32, to_step: u32) -> StepRange {
        StepRange {
            episode,
            from_step,
            to_step,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_stretch_is_asked_for_again_after_each_doubled_timeout_then_given_up() {
        let mut tracker = ResendTracker::new(3);
        let t0 = Instant::now();
        let gap = [range(4, 40, 80)];
        let timeout = |sends: u32| ms(10 << sends);
        assert_eq!(tracker.due(&gap, t0, timeout).send, gap);
        assert_eq!(tracker.due(&gap, t0 + ms(9), timeout), Due::default());
        assert_eq!(tracker.due(&gap, t0 + ms(10), timeout).send, gap);
        // The second request waits twice as long.
        assert_eq!(tracker.due(&gap, t0 + ms(29), timeout), Due::default());
        assert_eq!(tracker.due(&gap, t0 + ms(30), timeout).send, gap);
        let last = tracker.due(&gap, t0 + ms(70), timeout);
        assert_eq!((last.send.len(), last.give_up), (0, gap.to_vec()));
        assert_eq!(tracker.requests(), 3);
    }

    #[test]
    fn answers_time_the_round_trip_only_for_single_requests() {
        let mut tracker = ResendTracker::new(5);
        let t0 = Instant::now();
        let gaps = [range(1, 0, 40), range(2, 10, StepRange::TO_END)];
        tracker.due(&gaps, t0, |_| ms(5));
        assert_eq!(tracker.answered(1, 20, t0 + ms(3)), Some(ms(3)));
        assert_eq!(
            tracker.answered(1, 40, t0 + ms(3)),
            None,
            "outside the stretch"
        );
        assert_eq!(tracker.answered(2, 500, t0 + ms(4)), Some(ms(4)));
        tracker.due(&gaps, t0 + ms(6), |_| ms(5));
        assert_eq!(tracker.answered(1, 20, t0 + ms(7)), None, "asked twice");
        // A stretch no longer missing is forgotten.
        tracker.due(&gaps[1..], t0 + ms(7), |_| ms(5));
        assert_eq!(tracker.outstanding(), 1);
    }

    #[test]
    fn with_no_resends_allowed_every_gap_is_given_up_at_once() {
        let mut tracker = ResendTracker::new(0);
        let gap = [range(1, 0, 5)];
        let due = tracker.due(&gap, Instant::now(), |_| ms(1));
        assert_eq!((due.send.len(), due.give_up), (0, gap.to_vec()));
        assert_eq!(tracker.requests(), 0);
    }
}
