//! Bring-up: observing the plant without acting, and bounded test pulses (`tether probe`).
//!
//! In [`DeviceState::Observing`] the device settles the plant (a real one takes its zeros,
//! without centring), then once per control period reads an observation and sends it. A
//! [`PulseCommand`] the plant's bounds allow ([`PulseCommand::check`]) is applied through
//! [`Plant::actuate`] — with every limit of the plant in force — for its duration, then the
//! plant returns to its safe state. The watchdog runs as in episodes.

use embedded_io::{Read, ReadReady, Write, WriteReady};
use heapless::Vec;
use tether_shared::message::{
    DeviceMessage, DeviceState, EpisodeEndReason, Observation, PulseCommand, RefusalReason,
};
use tether_shared::plant::MAX_ACTION_DIM;

use super::Device;
use crate::clock::Clock;
use crate::link::Priority;
use crate::plant::{Action, Plant, Settling};

/// What observing keeps track of.
#[derive(Clone, Debug, Default)]
pub(super) struct Probe {
    /// When the next observation is due, µs.
    next_us: u64,
    /// The plant answered [`Plant::settle`] with ready.
    settled: bool,
    /// The pulse under way and when it ends (µs).
    pulse: Option<(Vec<f32, MAX_ACTION_DIM>, u64)>,
}

impl Probe {
    pub(super) fn next_us(&self) -> u64 {
        self.next_us
    }
}

impl<P, L, C, const CAP: usize, const NOISE_CAP: usize, const TX: usize>
    Device<P, L, C, CAP, NOISE_CAP, TX>
where
    P: Plant,
    L: Read + ReadReady + Write + WriteReady,
    C: Clock,
{
    /// Ends any run and starts observing. Already observing, it changes nothing: a repeated
    /// `Observe` (its acknowledgement was lost) keeps the pulse under way and the plant's
    /// settled state.
    pub(super) fn start_observing(&mut self) {
        if self.state == DeviceState::Observing {
            return;
        }
        self.end_session(EpisodeEndReason::Stopped);
        // As after `Stop`: the run's data is no longer wanted, nor a repeat of its command.
        self.link.forget_kept();
        self.last_run = None;
        self.probe = Probe {
            next_us: self.clock.now_us(),
            ..Probe::default()
        };
        self.state = DeviceState::Observing;
    }

    /// Starts a test pulse, observing first if idle; refused while running episodes or
    /// beyond the plant's pulse bounds.
    pub(super) fn start_pulse(&mut self, pulse: &PulseCommand) -> Result<(), RefusalReason> {
        match self.state {
            DeviceState::Running => return Err(RefusalReason::Busy),
            DeviceState::SafeStop if self.plant.fault().is_some() => {
                return Err(RefusalReason::Faulted);
            }
            DeviceState::Observing => {}
            DeviceState::Idle | DeviceState::SafeStop => self.start_observing(),
        }
        pulse
            .check(&self.description.action)
            .map_err(|_| RefusalReason::PulseOutOfBounds)?;
        let now = self.clock.now_us();
        if let Some((action, until)) = &self.probe.pulse
            && *action == pulse.action
            && now < *until
        {
            // The same pulse again while it lasts (its acknowledgement was lost): it is not
            // extended.
            return Ok(());
        }
        let until = now.saturating_add(u64::from(pulse.duration_us));
        self.probe.pulse = Some((pulse.action.clone(), until));
        info!("test pulse for {} us", pulse.duration_us);
        Ok(())
    }

    /// One observation (and pulse step) when due.
    pub(super) fn observe_due(&mut self, now: u64) {
        if now < self.probe.next_us {
            return;
        }
        self.probe.next_us = now.saturating_add(self.period_us);
        if !self.probe.settled {
            match self.plant.settle() {
                Settling::Ready => self.probe.settled = true,
                Settling::Busy => return,
                Settling::Failed => return self.fault(EpisodeEndReason::Fault),
            }
        }
        let Some(obs) = self.obs.get_mut(..self.layout.obs_dim()) else {
            return;
        };
        self.plant.observe(obs);
        let pulsing = self.pulse_step(now);
        if self.plant.fault().is_some() {
            return self.fault(EpisodeEndReason::Fault);
        }
        let mut values = Vec::new();
        let _ = values.extend_from_slice(self.obs.get(..self.layout.obs_dim()).unwrap_or(&[]));
        let report = DeviceMessage::Observation(Observation {
            uptime_us: now.wrapping_sub(self.boot_us) as u32,
            values,
            pulsing,
        });
        // Observations are periodic: one that does not fit is skipped.
        let _ = self.link.send(&report, Priority::Data);
    }

    /// Applies the pulse for one period while it lasts; the safe state once it is over.
    fn pulse_step(&mut self, now: u64) -> bool {
        match self.probe.pulse.take() {
            Some((action, until)) if now < until => {
                let _ = self.plant.actuate(Action::Continuous(&action));
                self.probe.pulse = Some((action, until));
                true
            }
            Some(_) => {
                self.plant.safe_state();
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use tether_shared::message::{AckTopic, HostMessage, RunCommand, RunMode};
    use tether_shared::{DeviceMessage, PolicySpec};

    use super::*;
    use crate::device::DeviceConfig;
    use crate::testkit::*;

    type TestDevice = Device<Integrator, LoopLink, ManualClock, 512>;

    fn device() -> (TestDevice, TestHost, ManualClock) {
        let (host, link) = loopback(1 << 20);
        let clock = ManualClock::default();
        let dev = Device::new(
            Integrator::new(false),
            link,
            clock.clone(),
            DeviceConfig::default(),
        );
        (dev, host, clock)
    }

    fn pulse(volts: f32, duration_us: u32) -> HostMessage {
        HostMessage::Pulse(PulseCommand {
            action: heapless::Vec::from_slice(&[volts]).unwrap_or_default(),
            duration_us,
        })
    }

    /// Polls once per 10 ms control period for `periods`, with host heartbeats.
    fn periods(
        dev: &mut TestDevice,
        host: &mut TestHost,
        clock: &ManualClock,
        n: u32,
    ) -> Vec<DeviceMessage> {
        let mut out = Vec::new();
        for i in 0..n {
            host.send(&HostMessage::Heartbeat { sequence: i });
            dev.poll();
            out.extend(host.receive());
            clock.advance(10_000);
        }
        out
    }

    /// Uploads a small policy and starts an endless run; returns the run command.
    fn start_a_run(dev: &mut TestDevice, host: &mut TestHost, clock: &ManualClock) -> HostMessage {
        let spec = PolicySpec::for_plant(&dev.plant().description(), &[4], false);
        for m in upload_messages(1, &spec, &params_for(&spec, 1, -1.0)) {
            host.send(&m);
            dev.poll();
        }
        let run = HostMessage::Run(RunCommand {
            first_episode: 0,
            episodes: 0,
            seed: 0,
            mode: RunMode::Explore,
        });
        host.send(&run);
        periods(dev, host, clock, 2);
        assert_eq!(dev.state(), DeviceState::Running);
        run
    }

    fn observations(messages: &[DeviceMessage]) -> Vec<(f32, bool)> {
        messages
            .iter()
            .filter_map(|m| match m {
                DeviceMessage::Observation(o) => Some((o.values[0], o.pulsing)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn observing_streams_without_acting_and_a_pulse_is_bounded_in_time() {
        let (mut dev, mut host, clock) = device();
        host.send(&HostMessage::Observe);
        let said = periods(&mut dev, &mut host, &clock, 5);
        assert!(said.contains(&DeviceMessage::Ack(AckTopic::Observe)));
        assert_eq!(dev.state(), DeviceState::Observing);
        let still = observations(&said);
        assert_eq!(still.len(), 5);
        assert!(
            still
                .iter()
                .all(|&(x, pulsing)| x == still[0].0 && !pulsing),
            "{still:?}"
        );
        assert!(
            dev.plant().applied.is_empty(),
            "nothing applied while observing"
        );
        // +0.25 (a quarter of the integrator's bound of 1) for 50 ms: five periods of it.
        host.send(&pulse(0.25, 50_000));
        let said = periods(&mut dev, &mut host, &clock, 10);
        assert!(said.contains(&DeviceMessage::Ack(AckTopic::Pulse)));
        assert_eq!(dev.plant().applied, [0.25; 5]);
        let moved = observations(&said);
        assert_eq!(moved.iter().filter(|o| o.1).count(), 5);
        assert!(
            moved.last().unwrap().0 > still[0].0,
            "x moved the pulse's way"
        );
        assert!(dev.plant().safe, "safe again after the pulse");
    }

    #[test]
    fn pulses_out_of_bounds_or_during_a_run_are_refused() {
        let (mut dev, mut host, clock) = device();
        for bad in [
            pulse(0.26, 1_000),
            pulse(0.1, 600_000),
            pulse(f32::INFINITY, 1_000),
        ] {
            host.send(&bad);
            let said = periods(&mut dev, &mut host, &clock, 1);
            assert!(
                said.iter().any(|m| matches!(m, DeviceMessage::Refused(r) if r.reason == RefusalReason::PulseOutOfBounds)),
                "{bad:?}: {said:?}"
            );
        }
        assert!(dev.plant().applied.is_empty());
        start_a_run(&mut dev, &mut host, &clock);
        host.send(&pulse(0.1, 1_000));
        let said = periods(&mut dev, &mut host, &clock, 1);
        assert!(
            said.iter()
                .any(|m| matches!(m, DeviceMessage::Refused(r) if r.reason == RefusalReason::Busy))
        );
    }

    #[test]
    fn a_repeated_observe_or_pulse_changes_nothing() {
        let (mut dev, mut host, clock) = device();
        host.send(&HostMessage::Observe);
        periods(&mut dev, &mut host, &clock, 2);
        host.send(&pulse(0.25, 50_000));
        periods(&mut dev, &mut host, &clock, 2);
        // Both commands again (their acknowledgements lost): acknowledged, the pulse keeps
        // its end and the device keeps observing.
        host.send(&HostMessage::Observe);
        host.send(&pulse(0.25, 50_000));
        let said = periods(&mut dev, &mut host, &clock, 10);
        assert!(said.contains(&DeviceMessage::Ack(AckTopic::Observe)));
        assert!(said.contains(&DeviceMessage::Ack(AckTopic::Pulse)));
        assert_eq!(dev.state(), DeviceState::Observing);
        assert_eq!(dev.plant().applied, [0.25; 5], "five periods, not seven");
    }

    #[test]
    fn observe_ends_a_run_and_a_repeat_of_its_command_starts_it_again() {
        let (mut dev, mut host, clock) = device();
        let run = start_a_run(&mut dev, &mut host, &clock);
        host.send(&HostMessage::Observe);
        periods(&mut dev, &mut host, &clock, 1);
        assert_eq!(dev.state(), DeviceState::Observing);
        host.send(&run);
        periods(&mut dev, &mut host, &clock, 1);
        assert_eq!(
            dev.state(),
            DeviceState::Running,
            "not taken for a duplicate"
        );
    }

    #[test]
    fn observing_has_a_watchdog() {
        let (mut dev, mut host, clock) = device();
        host.send(&HostMessage::Observe);
        dev.poll();
        let _ = host.receive();
        for _ in 0..300 {
            clock.advance(10_000);
            dev.poll();
        }
        assert_eq!(dev.state(), DeviceState::SafeStop);
        assert_eq!(dev.stats().watchdog_fired, 1);
    }
}
