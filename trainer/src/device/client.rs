//! The host's side of the conversation with one device.
//!
//! Every command waits for its acknowledgement for the retransmission timeout of the link
//! ([`super::rtt`]: measured round trips, doubled on each resend) and is sent again until
//! it is answered; commands are idempotent on the device, so a duplicate or a late
//! acknowledgement is harmless. Policies go up through [`super::upload`].

use std::time::{Duration, Instant};

use tether_shared::message::{
    AckTopic, DeviceInfo, PlantParams, PulseCommand, Refusal, RefusalReason, RunCommand,
};
use tether_shared::version::check_compatible;
use tether_shared::{DeviceMessage, HostMessage, PROTOCOL_VERSION, PolicySpec};

use tether_firmware::rate_limit::ActionRateLimit;

use super::frame_sizing::LineErrors;
use super::rtt::{RtoBounds, RttEstimator};
use super::upload::upload_policy;
use super::{DeviceError, DeviceLink};

/// Sends of one command before the device is called unresponsive (each waits the
/// retransmission timeout, doubled every time, within the ceiling, and all of them at most
/// the ceiling); sending goes on past them, up to the ceiling, while the device is still
/// heard.
pub const COMMAND_ATTEMPTS: u32 = 8;

/// Timeouts and retries for talking to a device.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long the handshake may take before the device is called silent.
    pub handshake_timeout: Duration,
    /// The acknowledgement timeout before the link's round-trip time is measured.
    pub ack_timeout: Duration,
    /// The shortest retransmission timeout, however fast the link answers.
    pub rto_floor: Duration,
    /// The longest retransmission timeout, backoff included; also the longest a command is
    /// retried before the device is called unresponsive.
    pub rto_ceiling: Duration,
    /// How often a failed upload is begun again before giving up.
    pub attempts: u32,
    /// Interval between host heartbeats while a device runs (keeps its watchdog fed).
    pub heartbeat_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let rto = RtoBounds::default();
        ClientConfig {
            handshake_timeout: Duration::from_secs(2),
            ack_timeout: rto.initial,
            rto_floor: rto.floor,
            rto_ceiling: rto.ceiling,
            attempts: 3,
            heartbeat_interval: Duration::from_millis(250),
        }
    }
}

impl ClientConfig {
    /// The retransmission timeout's bounds.
    pub fn rto_bounds(&self) -> RtoBounds {
        RtoBounds {
            floor: self.rto_floor,
            ceiling: self.rto_ceiling,
            initial: self.ack_timeout,
        }
    }
}

/// A device after a successful handshake.
pub struct DeviceClient {
    link: DeviceLink,
    info: DeviceInfo,
    config: ClientConfig,
    heartbeat_sequence: u32,
    last_sent: Instant,
    rtt: RttEstimator,
    /// Chunks the device did not acknowledge, per byte sent: the host-to-device line's
    /// damage, for the upload's chunk size.
    uplink: LineErrors,
    /// The plant parameters set on the device, sent again after every reconnect.
    plant_params: Option<PlantParams>,
}

/// What a device's answer to a command was.
enum Answer {
    Acked,
    Refused(Refusal),
}

impl DeviceClient {
    /// Performs the handshake: checks the protocol version and the plant description.
    pub fn connect(mut link: DeviceLink, config: ClientConfig) -> Result<Self, DeviceError> {
        let mut rtt = RttEstimator::new(config.rto_bounds());
        let info = handshake(&mut link, &config, &mut rtt)?;
        Ok(DeviceClient {
            link,
            info,
            config,
            heartbeat_sequence: 0,
            last_sent: Instant::now(),
            rtt,
            uplink: LineErrors::new(),
            plant_params: None,
        })
    }

    /// Sets the simulated plant's parameters and ranges (see [`PlantParams`]), from its next
    /// episode on, and keeps them to set again after every reconnect. A device whose plant
    /// takes no parameters (physical hardware) refuses: [`DeviceError::ParamsRefused`].
    pub fn set_plant_params(&mut self, params: PlantParams) -> Result<(), DeviceError> {
        self.send_plant_params(&params)?;
        self.plant_params = Some(params);
        Ok(())
    }

    fn send_plant_params(&mut self, params: &PlantParams) -> Result<(), DeviceError> {
        let count = u8::try_from(params.settings.len()).unwrap_or(u8::MAX);
        let message = HostMessage::PlantParams(params.clone());
        let what = "plant parameters";
        match self.exchange(&message, AckTopic::PlantParams { count }, what)? {
            Answer::Acked => Ok(()),
            Answer::Refused(refusal) => {
                let index = match refusal.topic {
                    AckTopic::PlantParams { count } => usize::from(count),
                    _ => 0,
                };
                Err(DeviceError::ParamsRefused {
                    device: self.name().to_string(),
                    setting: (refusal.reason != RefusalReason::FixedPhysics)
                        .then(|| params.settings.get(index))
                        .flatten()
                        .map(|s| s.name.to_string()),
                    reason: refusal.reason,
                })
            }
        }
    }

    /// Handshakes again after a failure (a device that reset, went silent or dropped off):
    /// reopens the link when it knows how (see [`DeviceLink::with_reopen`]), then says
    /// `Hello` again. The device must describe the same plant as before. Afterwards it runs
    /// whatever policy it reports in [`DeviceClient::info`] (none after a reset).
    pub fn reconnect(&mut self) -> Result<(), DeviceError> {
        self.link.reopen()?;
        // Another cable, another device perhaps: measure again.
        self.rtt = RttEstimator::new(self.config.rto_bounds());
        self.uplink = LineErrors::new();
        let info = handshake(&mut self.link, &self.config, &mut self.rtt)?;
        if info.plant != self.info.plant {
            return Err(DeviceError::Incompatible {
                device: self.name().to_string(),
                reason: format!(
                    "after reconnecting it describes plant `{}`, not `{}` as before",
                    info.plant.name, self.info.plant.name
                ),
            });
        }
        self.info = info;
        self.last_sent = Instant::now();
        if let Some(params) = self.plant_params.clone() {
            self.send_plant_params(&params)?;
        }
        Ok(())
    }

    /// What the device said about itself in the handshake.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.link.name()
    }

    /// The underlying link (for its counters).
    pub fn link(&self) -> &DeviceLink {
        &self.link
    }

    /// The underlying link, to send raw messages (tests that probe the device's refusals).
    pub fn link_mut(&mut self) -> &mut DeviceLink {
        &mut self.link
    }

    /// The link's round-trip estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The link's round-trip estimate, to add samples (the rollout's resend requests).
    pub fn rtt_mut(&mut self) -> &mut RttEstimator {
        &mut self.rtt
    }

    /// The retransmission timeout for send number `attempt` (0: the first) of a request.
    pub fn timeout(&self, attempt: u32) -> Duration {
        self.rtt.timeout(attempt)
    }

    /// The timeout for send number `attempt` of a frame whose answer may wait behind
    /// everything queued on a slow line (see [`RttEstimator::backoff`]): doubling without
    /// limit, up to the ceiling.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.rtt.backoff(attempt)
    }

    /// The host-to-device line's damage seen so far (chunks unacknowledged per byte).
    pub fn uplink_errors(&mut self) -> &mut LineErrors {
        &mut self.uplink
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Uploads a policy and commits it; the device runs it from its next episode on.
    /// Chunks go out a few at a time and only the unacknowledged ones are sent again,
    /// smaller on a damaging line (see [`super::upload`]); a refused upload is begun again,
    /// up to [`ClientConfig::attempts`] times.
    pub fn upload(
        &mut self,
        version: u32,
        spec: &PolicySpec,
        params: &[f32],
    ) -> Result<(), DeviceError> {
        spec.validate(self.info.policy_capacity)
            .map_err(|e| DeviceError::Incompatible {
                device: self.name().to_string(),
                reason: e.to_string(),
            })?;
        let mut last_error = None;
        for _ in 0..self.config.attempts.max(1) {
            match upload_policy(self, version, spec, params) {
                Ok(()) => return Ok(()),
                Err(e @ (DeviceError::NoAck { .. } | DeviceError::Refused { .. })) => {
                    tracing::warn!(device = %self.name(), "policy upload failed, retrying: {e}");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_ack("policy upload", Duration::ZERO, 0)))
    }

    /// Starts a run of episodes.
    pub fn start(&mut self, run: RunCommand) -> Result<(), DeviceError> {
        self.command(&HostMessage::Run(run), AckTopic::Run, "run")
    }

    /// Puts the device in its observing mode (plant safe, an observation per control
    /// period; `tether probe`).
    pub fn observe(&mut self) -> Result<(), DeviceError> {
        self.command(&HostMessage::Observe, AckTopic::Observe, "observe")
    }

    /// Starts a bounded test pulse while observing.
    pub fn pulse(&mut self, pulse: PulseCommand) -> Result<(), DeviceError> {
        self.command(&HostMessage::Pulse(pulse), AckTopic::Pulse, "test pulse")
    }

    /// Stops the device (plant to its safe state), discarding whatever it still streams.
    pub fn stop(&mut self) -> Result<(), DeviceError> {
        self.command(&HostMessage::Stop, AckTopic::Stop, "stop")
    }

    /// Waits up to `timeout` for the next message, sending a heartbeat when one is due.
    pub fn next_message(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<DeviceMessage>, DeviceError> {
        self.heartbeat_if_due()?;
        let message = self
            .link
            .recv(timeout.min(self.config.heartbeat_interval))?;
        if let Some(DeviceMessage::Log(line)) = &message {
            tracing::info!(device = %self.name(), "{}", line.text);
        }
        Ok(message)
    }

    fn heartbeat_if_due(&mut self) -> Result<(), DeviceError> {
        if self.last_sent.elapsed() >= self.config.heartbeat_interval {
            self.heartbeat_sequence = self.heartbeat_sequence.wrapping_add(1);
            let sequence = self.heartbeat_sequence;
            self.send(&HostMessage::Heartbeat { sequence })?;
        }
        Ok(())
    }

    /// Sends one message (it also feeds the device's watchdog).
    pub fn send(&mut self, message: &HostMessage) -> Result<(), DeviceError> {
        self.last_sent = Instant::now();
        self.link.send(message)
    }

    /// Sends `message` and waits for the acknowledgement `expected`, sending it again each
    /// time the (doubling) retransmission timeout passes, for at most the ceiling's worth
    /// of waiting. After [`COMMAND_ATTEMPTS`] sends it gives up on a device that sent
    /// nothing during the last wait; one still sending (its acknowledgement queued behind a
    /// slow line's backlog, which a millisecond's RTO would not wait for) is waited for up
    /// to the ceiling.
    pub(super) fn command(
        &mut self,
        message: &HostMessage,
        expected: AckTopic,
        what: &str,
    ) -> Result<(), DeviceError> {
        match self.exchange(message, expected, what)? {
            Answer::Acked => Ok(()),
            Answer::Refused(refusal) => Err(DeviceError::Refused {
                device: self.name().to_string(),
                what: what.to_string(),
                reason: refusal.reason,
            }),
        }
    }

    /// Sends `message` until the device answers it (acknowledged as `expected`, or
    /// refused), with the timeouts and limits of [`DeviceClient::command`].
    fn exchange(
        &mut self,
        message: &HostMessage,
        expected: AckTopic,
        what: &str,
    ) -> Result<Answer, DeviceError> {
        let started = Instant::now();
        let mut sends = 0;
        loop {
            let attempt = sends;
            sends += 1;
            let sent = Instant::now();
            let heard_before = self.link.bytes_received();
            self.send(message)?;
            // The first sends as any retransmission (a silent device is given up as soon as
            // before); past them, a device still heard is waited for longer each time.
            let wait = if sends <= COMMAND_ATTEMPTS {
                self.rtt.timeout(attempt)
            } else {
                let left = self.config.rto_ceiling.saturating_sub(started.elapsed());
                self.rtt.backoff(attempt).min(left.max(self.rtt.rto()))
            };
            if let Some(answer) = self.await_answer(expected, wait)? {
                if attempt == 0 {
                    // Karn: only an answer to a single send times the round trip.
                    self.rtt.sample(sent.elapsed());
                }
                return Ok(answer);
            }
            let still_heard = self.link.bytes_received() != heard_before;
            let out_of_time = started.elapsed() >= self.config.rto_ceiling;
            if (attempt > 0 && out_of_time) || (sends >= COMMAND_ATTEMPTS && !still_heard) {
                break;
            }
        }
        Err(self.no_ack(what, started.elapsed(), sends))
    }

    fn await_answer(
        &mut self,
        expected: AckTopic,
        timeout: Duration,
    ) -> Result<Option<Answer>, DeviceError> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.link.recv(left)? {
                Some(DeviceMessage::Ack(topic)) if topic == expected => {
                    return Ok(Some(Answer::Acked));
                }
                Some(DeviceMessage::Refused(refusal)) if same_command(refusal.topic, expected) => {
                    return Ok(Some(Answer::Refused(refusal)));
                }
                Some(DeviceMessage::Log(line)) => {
                    tracing::info!(device = %self.name(), "{}", line.text);
                }
                Some(_) | None => {}
            }
        }
        Ok(None)
    }

    /// The error for a command `what` nobody acknowledged after `waited` and `attempts`
    /// sends.
    pub(super) fn no_ack(&self, what: &str, waited: Duration, attempts: u32) -> DeviceError {
        DeviceError::NoAck {
            device: self.name().to_string(),
            what: what.to_string(),
            waited,
            attempts,
        }
    }
}

/// Whether a refusal's topic names the same command as `expected` (a refused chunk names
/// the offset the device expected, not the one sent).
fn same_command(refused: AckTopic, expected: AckTopic) -> bool {
    core::mem::discriminant(&refused) == core::mem::discriminant(&expected)
}

/// Says `Hello` until the device answers (or the handshake timeout passes) and checks its
/// protocol version and plant description. The answer times the round trip.
fn handshake(
    link: &mut DeviceLink,
    config: &ClientConfig,
    rtt: &mut RttEstimator,
) -> Result<DeviceInfo, DeviceError> {
    let deadline = Instant::now() + config.handshake_timeout;
    // Say hello a few times: the first may land while the device is still booting or
    // while the decoder resynchronises on line noise.
    let per_try = config.handshake_timeout / 4;
    let info = loop {
        let sent = Instant::now();
        link.send(&HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        })?;
        let try_deadline = (Instant::now() + per_try).min(deadline);
        let mut found = None;
        while let Some(left) = try_deadline.checked_duration_since(Instant::now()) {
            if let Some(DeviceMessage::Hello(info)) = link.recv(left)? {
                found = Some(info);
                break;
            }
        }
        if let Some(info) = found {
            // An answer to an earlier `Hello` would have come long before this one was
            // sent (each try waits a quarter of the handshake timeout): time the last.
            rtt.sample(sent.elapsed());
            break info;
        }
        // A device on another protocol version may answer with a Hello this build cannot
        // decode; its version still reads, and names the side to update.
        if let Some(mismatch) = link
            .foreign_hello_version()
            .and_then(|theirs| check_compatible(theirs).err())
        {
            return Err(DeviceError::ProtocolMismatch {
                device: link.name().to_string(),
                mismatch,
            });
        }
        if Instant::now() >= deadline {
            let device = link.name().to_string();
            return Err(if link.bytes_received() > 0 && link.stats().frames == 0 {
                DeviceError::Garbage {
                    device,
                    bytes: link.bytes_received() as usize,
                }
            } else {
                DeviceError::Silent {
                    device,
                    waited: config.handshake_timeout,
                }
            });
        }
    };
    let device = link.name().to_string();
    check_compatible(info.protocol_version).map_err(|mismatch| DeviceError::ProtocolMismatch {
        device: device.clone(),
        mismatch,
    })?;
    info.plant
        .validate()
        .map_err(|reason| DeviceError::BadPlant {
            device: device.clone(),
            reason: reason.to_string(),
        })?;
    if !info.action_rate_limit.is_empty() {
        // The host replays the limit to know what the plant received: it must be usable.
        ActionRateLimit::new(&info.action_rate_limit).map_err(|e| DeviceError::BadPlant {
            device,
            reason: format!("its action rate limit {:?}: {e}", info.action_rate_limit),
        })?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tether_shared::message::{RefusalReason, RunMode};

    use super::*;
    use crate::device::simulated::test_device::{self, quick_config};

    /// A line that answers reads with `left` bytes of 0x55 (never a frame delimiter), then
    /// times out like a quiet serial port; whatever is written vanishes.
    struct NoisyLine {
        left: usize,
    }

    impl std::io::Read for NoisyLine {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                std::thread::sleep(Duration::from_millis(5));
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let n = buf.len().min(self.left);
            buf[..n].fill(0x55);
            self.left -= n;
            Ok(n)
        }
    }

    impl std::io::Write for NoisyLine {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run_one_episode() -> RunCommand {
        RunCommand {
            first_episode: 0,
            episodes: 1,
            seed: 1,
            mode: RunMode::Explore,
        }
    }

    #[test]
    fn the_handshake_reports_the_plant_the_protocol_and_no_policy() {
        let device = test_device::connect("cartpole");
        let info = device.client.info();
        assert_eq!(info.plant.name.as_str(), "cartpole");
        assert_eq!(info.protocol_version, PROTOCOL_VERSION);
        assert_eq!(info.active_policy, None);
        assert!(info.policy_capacity > 0);
        assert_eq!(device.client.name(), "cartpole");
    }

    #[test]
    fn a_silent_device_is_named_after_the_handshake_timeout() {
        let line = NoisyLine { left: 0 };
        let started = Instant::now();
        let err = DeviceClient::connect(DeviceLink::new("quiet", Box::new(line)), quick_config())
            .err()
            .expect("no answer");
        assert!(
            matches!(&err, DeviceError::Silent { device, .. } if device == "quiet"),
            "{err}"
        );
        let waited = started.elapsed();
        assert!(waited >= quick_config().handshake_timeout, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn bytes_that_never_make_a_frame_are_called_garbage() {
        let line = NoisyLine { left: 300 };
        let err = DeviceClient::connect(DeviceLink::new("noisy", Box::new(line)), quick_config())
            .err()
            .expect("no hello");
        assert!(
            matches!(err, DeviceError::Garbage { bytes: 300, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_uploaded_policy_is_the_one_the_device_runs() {
        let mut device = test_device::connect("pendulum");
        let (spec, params) = test_device::policy(&device.client.info().plant);
        device
            .client
            .upload(5, &spec, &params)
            .expect("acknowledged");
        device
            .client
            .start(run_one_episode())
            .expect("run acknowledged");
        let deadline = Instant::now() + Duration::from_secs(5);
        let batch = loop {
            assert!(Instant::now() < deadline, "no transitions");
            if let Some(DeviceMessage::Transitions(batch)) = device
                .client
                .next_message(Duration::from_millis(50))
                .expect("link up")
            {
                break batch;
            }
        };
        assert_eq!(batch.policy_version, 5);
        device.client.stop().expect("stop acknowledged");
    }

    #[test]
    fn refusals_carry_the_devices_reason_and_misfits_are_caught_before_sending() {
        let mut device = test_device::connect("pendulum");
        let err = device
            .client
            .start(run_one_episode())
            .expect_err("no policy yet");
        assert!(
            matches!(
                err,
                DeviceError::Refused {
                    reason: RefusalReason::NoPolicy,
                    ..
                }
            ),
            "{err}"
        );
        let plant = device.client.info().plant.clone();
        let huge = PolicySpec::for_plant(&plant, &[256, 256, 256, 256], false);
        let params = vec![0.0; huge.param_count()];
        let err = device
            .client
            .upload(1, &huge, &params)
            .expect_err("too big");
        assert!(matches!(err, DeviceError::Incompatible { .. }), "{err}");
        assert!(device.client.link().stats().frames > 0);
    }

    /// `reconnect` reopens the link and handshakes again; a device that comes back as
    /// another plant is refused, naming both.
    #[test]
    fn reconnecting_handshakes_again_and_refuses_another_plant() {
        let boards = Arc::new(Mutex::new(Vec::new()));
        let next_plant = Arc::new(Mutex::new("pendulum"));
        let (link, first) = test_device::link("pendulum", "rig");
        boards.lock().unwrap().push(first);
        let (opened, plant) = (boards.clone(), next_plant.clone());
        let link = link.with_reopen(Box::new(move || {
            let (stream, board) = test_device::stream(*plant.lock().unwrap());
            opened.lock().unwrap().push(board);
            Ok(stream)
        }));
        let mut client = DeviceClient::connect(link, quick_config()).expect("handshake");
        client.reconnect().expect("the same plant comes back");
        assert_eq!(client.info().plant.name.as_str(), "pendulum");
        assert_eq!(boards.lock().unwrap().len(), 2, "the link was reopened");

        *next_plant.lock().unwrap() = "qube";
        let err = client.reconnect().expect_err("another plant");
        let message = err.to_string();
        assert!(
            message.contains("`qube`") && message.contains("`pendulum`"),
            "{message}"
        );
    }
}
