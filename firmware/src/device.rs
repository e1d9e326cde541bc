//! The device runtime: a state machine driven by [`Device::poll`].
//!
//! The board's main loop (or a timer interrupt) calls [`Device::poll`] often — at least once
//! per control period, ideally much more often. Each call:
//!
//! 1. writes queued outgoing bytes the link can take now;
//! 2. reads and handles the host's messages that have arrived;
//! 3. checks the watchdog;
//! 4. runs one control step if its deadline has come;
//! 5. sends a heartbeat if one is due, and writes again.
//!
//! Nothing blocks: a link that cannot keep up ends the episode as
//! [`EpisodeEndReason::Overrun`] instead of stalling the loop.
//!
//! States: [`DeviceState::Idle`] (plant safe, waiting), [`DeviceState::Running`] (episodes
//! under way) and [`DeviceState::SafeStop`] (plant safe after a fault or watchdog expiry; a
//! `Hello`, `Stop` or `Run` from the host leaves it).

use heapless::Vec;
use tether_shared::message::{
    AckTopic, DeviceInfo, DeviceMessage, DeviceState, EpisodeEnd, EpisodeEndReason, Heartbeat,
    HostMessage, LogLine, RecordLayout, Refusal, RefusalReason, RunCommand, RunMode, StepRange,
    TRANSITION_BATCH_VALUES, TransitionBatch, TransitionRecord, episode_before,
};
use tether_shared::plant::{MAX_ACTION_DIM, MAX_DISCRETE_ACTIONS, MAX_OBS_DIM};
use tether_shared::policy::sde::SdeHead;
use tether_shared::policy::{MAX_LAYER_WIDTH, argmax};
use tether_shared::seeds::{EpisodeStream, episode_seed};
use tether_shared::version::FirmwareVersion;
use tether_shared::{ActionSpace, PROTOCOL_VERSION, PlantDescription, PolicyHead};

use embedded_io::{Read, ReadReady, Write, WriteReady};

use crate::clock::Clock;
use crate::gsde::{DEFAULT_NOISE_CAPACITY, SdeNoise};
use crate::link::{DataKey, LinkEndpoint, Priority, READ_BUF_LEN, RetransmitStats, TX_CAPACITY};
use crate::plant::{Action, Plant, Settling, StepOutcome};
use crate::policy_store::PolicyStore;
use crate::policy_tiles::TiledPolicy;
use crate::rate_limit::{ActionRateLimit, resting_action};
use crate::safety::{Watchdog, all_finite, clamp_continuous, clamp_discrete};
use crate::sampler::Sampler;

mod probe;
use probe::Probe;

/// This firmware's version, from the crate version.
pub const FIRMWARE_VERSION: FirmwareVersion = FirmwareVersion {
    major: parse_u8(env!("CARGO_PKG_VERSION_MAJOR")),
    minor: parse_u8(env!("CARGO_PKG_VERSION_MINOR")),
    patch: parse_u8(env!("CARGO_PKG_VERSION_PATCH")),
};

const fn parse_u8(s: &str) -> u8 {
    let bytes = s.as_bytes();
    let mut value: u8 = 0;
    let mut i = 0;
    while i < bytes.len() {
        value = value
            .wrapping_mul(10)
            .wrapping_add(bytes[i].wrapping_sub(b'0'));
        i += 1;
    }
    value
}

/// Most network outputs: Gaussian mean or categorical logits.
const MAX_OUTPUT: usize = if MAX_ACTION_DIM > MAX_DISCRETE_ACTIONS {
    MAX_ACTION_DIM
} else {
    MAX_DISCRETE_ACTIONS
};

/// Scratch for the forward pass: two activation vectors of the widest allowed layer.
const SCRATCH_LEN: usize = 2 * MAX_LAYER_WIDTH;

/// Host messages handled per [`Device::poll`] at most (bounds the time one poll can take
/// when the host floods the link).
const MAX_READS_PER_POLL: usize = 32;

/// Tunable behaviour of a [`Device`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceConfig {
    /// While running, the plant goes to its safe state when no host message arrived for this
    /// many microseconds. 0 disables the watchdog.
    pub watchdog_timeout_us: u64,
    /// Microseconds between two device heartbeats.
    pub heartbeat_period_us: u64,
    /// Largest change of a continuous action from one control step to the next, enforced
    /// after sampling and clamping (see [`crate::rate_limit`]); `None`: no limit. Reported
    /// in the handshake; steps it changed are counted in each episode's end.
    pub action_rate_limit: Option<ActionRateLimit>,
}

impl Default for DeviceConfig {
    /// A 2 s watchdog, a heartbeat every 0.5 s, no action rate limit.
    fn default() -> Self {
        DeviceConfig {
            watchdog_timeout_us: 2_000_000,
            heartbeat_period_us: 500_000,
            action_rate_limit: None,
        }
    }
}

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Control steps taken.
    pub steps: u64,
    /// Episodes ended, whatever the reason.
    pub episodes: u32,
    /// Host messages decoded.
    pub messages_in: u32,
    /// Incoming frames rejected (bad CRC, broken COBS, overflow, unknown message).
    pub bad_frames: u32,
    /// Times the watchdog fired.
    pub watchdog_fired: u32,
}

/// The episode under way.
struct CurrentEpisode {
    id: u32,
    steps: u32,
    episode_return: f32,
    worst_step_us: u32,
    missed_deadlines: u32,
    /// Steps whose action the rate limit changed.
    rate_limited_steps: u32,
    batch: TransitionBatch,
    /// Whether the plant reported itself ready ([`Plant::settle`]); no step runs before.
    settled: bool,
}

/// The device runtime for plant `P`, link `L`, clock `C`, a policy capacity of `CAP` f32
/// values per buffer (two buffers are kept), room for gSDE noise matrices of
/// `NOISE_CAP` values (see [`crate::gsde`]; two matrices are kept) and an outgoing queue
/// (the retransmit ring) of `TX` bytes: [`TX_CAPACITY`] on hardware; the simulated board
/// may keep more (see `sim::SIM_DEEP_TX_CAPACITY`).
pub struct Device<
    P,
    L,
    C,
    const CAP: usize,
    const NOISE_CAP: usize = DEFAULT_NOISE_CAPACITY,
    const TX: usize = TX_CAPACITY,
> {
    plant: P,
    description: PlantDescription,
    /// The layout of the records this plant's steps make.
    layout: RecordLayout,
    link: LinkEndpoint<L, TX>,
    clock: C,
    config: DeviceConfig,
    store: PolicyStore<CAP>,
    sampler: Sampler,
    /// The gSDE noise matrix and its σ (used by gSDE policies only).
    noise: SdeNoise<NOISE_CAP>,
    state: DeviceState,
    run: Option<RunCommand>,
    /// The last run command accepted since the last `Hello` or `Stop`: a repeat of it (its
    /// acknowledgement was lost) is acknowledged without restarting the run.
    last_run: Option<RunCommand>,
    /// Most values per transition batch ([`HostMessage::BatchLimit`]).
    batch_limit: u16,
    /// Episodes of the current run already ended.
    completed: u32,
    episode: Option<CurrentEpisode>,
    /// An episode end that did not fit the outgoing queue yet; no new episode starts until
    /// it is queued.
    pending_end: Option<EpisodeEnd>,
    watchdog: Watchdog,
    boot_us: u64,
    period_us: u64,
    next_deadline_us: u64,
    next_heartbeat_us: u64,
    /// When to ask an unsettled plant again ([`Plant::settle`]).
    next_settle_us: u64,
    /// Observing and test pulses (bring-up).
    probe: Probe,
    last_host_sequence: u32,
    obs: [f32; MAX_OBS_DIM],
    output: [f32; MAX_OUTPUT],
    action: [f32; MAX_ACTION_DIM],
    /// The continuous action the plant received last (the rate limit's reference).
    applied: [f32; MAX_ACTION_DIM],
    scratch: [f32; SCRATCH_LEN],
    stats: DeviceStats,
}

impl<P, L, C, const CAP: usize, const NOISE_CAP: usize, const TX: usize>
    Device<P, L, C, CAP, NOISE_CAP, TX>
where
    P: Plant,
    L: Read + ReadReady + Write + WriteReady,
    C: Clock,
{
    /// A device in the idle state with no policy; puts the plant in its safe state.
    pub fn new(mut plant: P, link: L, clock: C, config: DeviceConfig) -> Self {
        plant.safe_state();
        let description = plant.description();
        let now = clock.now_us();
        let period_us = description.control_period_us();
        info!("device up, control period {} us", period_us);
        Device {
            plant,
            layout: RecordLayout::of_plant(&description),
            description,
            link: LinkEndpoint::with_queue(link),
            clock,
            config,
            store: PolicyStore::new(),
            sampler: Sampler::new(0),
            noise: SdeNoise::new(),
            state: DeviceState::Idle,
            run: None,
            last_run: None,
            batch_limit: TRANSITION_BATCH_VALUES as u16,
            completed: 0,
            episode: None,
            pending_end: None,
            watchdog: Watchdog::new(config.watchdog_timeout_us, now),
            boot_us: now,
            period_us,
            next_deadline_us: now,
            next_heartbeat_us: now,
            next_settle_us: now,
            probe: Probe::default(),
            last_host_sequence: 0,
            obs: [0.0; MAX_OBS_DIM],
            output: [0.0; MAX_OUTPUT],
            action: [0.0; MAX_ACTION_DIM],
            applied: [0.0; MAX_ACTION_DIM],
            scratch: [0.0; SCRATCH_LEN],
            stats: DeviceStats::default(),
        }
    }

    /// Takes the device apart (as at power-off): the plant, the byte stream and the clock.
    pub fn into_parts(self) -> (P, L, C) {
        (self.plant, self.link.into_inner(), self.clock)
    }

    /// Current state.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The retransmit ring's counters (resent, evicted, refused).
    pub fn retransmit_stats(&self) -> RetransmitStats {
        self.link.retransmit_stats()
    }

    /// Whether the outgoing queue cannot take another full transition batch without
    /// evicting data the host has not released, though it could once the host releases
    /// what was written. A board in virtual time waits for the host then instead of moving
    /// its clock; a real-time device goes on and evicts. When unwritten bytes fill the
    /// queue (a link slower than the plant) this is false: the episode overruns, as on a
    /// real device.
    pub fn awaiting_release(&self) -> bool {
        let bound = TransitionBatch::max_frame_len(usize::from(self.batch_limit));
        self.link.waits_for_release(bound)
    }

    /// The plant.
    pub fn plant(&self) -> &P {
        &self.plant
    }

    /// The plant, mutably (for tests and board bring-up).
    pub fn plant_mut(&mut self) -> &mut P {
        &mut self.plant
    }

    /// The byte stream, mutably (for the simulated board's link emulation).
    pub fn link_io_mut(&mut self) -> &mut L {
        self.link.io_mut()
    }

    /// Version of the running policy, if any.
    pub fn active_policy(&self) -> Option<u32> {
        self.store.running().map(|m| m.version)
    }

    /// The running policy, ready to evaluate (for benchmarks and diagnostics: the control
    /// step evaluates it itself).
    pub fn policy(&self) -> Option<TiledPolicy<'_>> {
        self.store.view()
    }

    /// Control period in µs (`1 / control_rate_hz`).
    pub fn period_us(&self) -> u64 {
        self.period_us
    }

    /// Handles `message` as if it had arrived from the host (a firmware that boots a
    /// built-in policy uploads and runs it this way, see [`crate::deploy`]). It does not
    /// feed the watchdog nor count as host traffic.
    pub fn handle_message(&mut self, message: HostMessage) {
        self.handle(&message);
    }

    /// Changes the watchdog's timeout (0 disables it); takes effect from now.
    pub fn set_watchdog_timeout_us(&mut self, timeout_us: u64) {
        self.watchdog = Watchdog::new(timeout_us, self.clock.now_us());
    }

    /// Stops keeping the transition batches and episode ends sent so far for resending (a
    /// run no host watches, see [`crate::deploy`]); bytes not yet written still go out.
    pub fn forget_sent_data(&mut self) {
        self.link.forget_kept();
    }

    /// Outgoing bytes queued but not yet accepted by the link.
    pub fn tx_pending(&self) -> usize {
        self.link.tx_pending()
    }

    /// The earliest clock time (µs) at which [`Device::poll`] has timed work to do: a control
    /// step, a heartbeat or a watchdog check. Incoming bytes also need a poll, whenever they
    /// arrive.
    pub fn next_wakeup_us(&self) -> u64 {
        let mut wake = self.next_heartbeat_us;
        if self.state == DeviceState::Running {
            let step = if self.episode.as_ref().is_some_and(|ep| !ep.settled) {
                self.next_settle_us
            } else if self.episode.is_some() || self.pending_end.is_none() {
                self.next_deadline_us
            } else {
                self.clock.now_us()
            };
            wake = wake.min(step);
            if self.watchdog.timeout_us() != 0 {
                let expiry = self
                    .watchdog
                    .last_feed_us()
                    .saturating_add(self.watchdog.timeout_us())
                    .saturating_add(1);
                wake = wake.min(expiry);
            }
        }
        if self.state == DeviceState::Observing {
            wake = wake.min(self.probe.next_us());
            if self.watchdog.timeout_us() != 0 {
                let expiry = self
                    .watchdog
                    .last_feed_us()
                    .saturating_add(self.watchdog.timeout_us());
                wake = wake.min(expiry.saturating_add(1));
            }
        }
        if self.pending_end.is_some() {
            wake = wake.min(self.clock.now_us());
        }
        wake
    }

    /// Does whatever is due now; never blocks. Call it at least once per control period.
    pub fn poll(&mut self) {
        self.link.poll_write();
        self.receive();
        let now = self.clock.now_us();
        let watched = matches!(self.state, DeviceState::Running | DeviceState::Observing);
        if watched && self.watchdog.expired(now) {
            self.stats.watchdog_fired += 1;
            warn!(
                "watchdog: host silent for more than {} us",
                self.watchdog.timeout_us()
            );
            self.fault(EpisodeEndReason::Fault);
        }
        self.queue_pending_end();
        match self.state {
            DeviceState::Running => self.run_due(now),
            DeviceState::Observing => self.observe_due(now),
            DeviceState::Idle | DeviceState::SafeStop => {}
        }
        self.heartbeat();
        self.link.poll_write();
    }

    // ----- incoming -------------------------------------------------------------------

    /// Reads and handles what the host sent. Not inlined: a decoded host message can be
    /// about 1 KB, and in a frame of its own that space is not added to the control step's.
    /// The message has one place here: it is decoded straight into it (the decoder's
    /// temporaries live in a frame of their own, gone before the handler runs) and handled
    /// by reference.
    #[inline(never)]
    fn receive(&mut self) {
        let mut buf = [0u8; READ_BUF_LEN];
        for _ in 0..MAX_READS_PER_POLL {
            let n = self.link.poll_read(&mut buf);
            if n == 0 {
                return;
            }
            let mut input = buf.get(..n).unwrap_or(&[]);
            while let Some(frame) = self.link.next_frame(&mut input) {
                let decoded = frame.and_then(|frame| self.link.decode_frame(frame));
                match &decoded {
                    Ok(message) => {
                        self.stats.messages_in = self.stats.messages_in.wrapping_add(1);
                        self.watchdog.feed(self.clock.now_us());
                        self.handle(message);
                    }
                    Err(e) => {
                        self.stats.bad_frames = self.stats.bad_frames.wrapping_add(1);
                        debug!("bad frame from host: {}", e);
                    }
                }
            }
        }
    }

    /// Answers one host message. By reference and not inlined: the message (up to about
    /// 1 KB) is not copied again, and the handlers' locals are not added to the receive
    /// loop's frame.
    #[inline(never)]
    fn handle(&mut self, message: &HostMessage) {
        match message {
            &HostMessage::Hello { protocol_version } => {
                if protocol_version != PROTOCOL_VERSION {
                    warn!("host speaks protocol v{}", protocol_version);
                }
                self.end_session(EpisodeEndReason::Stopped);
                self.store.abort_upload();
                self.link.forget_kept();
                self.last_run = None;
                self.batch_limit = TRANSITION_BATCH_VALUES as u16;
                self.send_hello();
            }
            HostMessage::PolicyBegin(begin) => {
                let topic = AckTopic::PolicyBegin {
                    version: begin.version,
                };
                let result = SdeNoise::<NOISE_CAP>::check_spec(&begin.spec)
                    .and_then(|()| self.store.begin(begin, &self.description));
                self.answer(topic, result);
            }
            HostMessage::PolicyChunk(chunk) => match self.store.chunk(chunk) {
                Ok(received) => self.answer(
                    AckTopic::PolicyChunk {
                        version: chunk.version,
                        received,
                    },
                    Ok(()),
                ),
                Err(reason) => self.answer(
                    AckTopic::PolicyChunk {
                        version: chunk.version,
                        received: chunk.offset,
                    },
                    Err(reason),
                ),
            },
            &HostMessage::PolicyCommit { version } => {
                let result = self.store.commit(version, &self.description);
                if result.is_ok() && self.episode.is_none() {
                    // Between episodes already: the boundary is now.
                    self.swap_staged();
                }
                self.answer(AckTopic::PolicyCommit { version }, result);
            }
            HostMessage::Run(command) => {
                if self.last_run.as_ref() == Some(command) {
                    // A repeat (the acknowledgement was lost): the run goes on.
                    self.answer(AckTopic::Run, Ok(()));
                    return;
                }
                if self.store.running().is_none() && self.store.staged().is_none() {
                    self.answer(AckTopic::Run, Err(RefusalReason::NoPolicy));
                    return;
                }
                self.end_session(EpisodeEndReason::Stopped);
                self.link.forget_kept();
                self.last_run = Some(command.clone());
                self.answer(AckTopic::Run, Ok(()));
                info!(
                    "run: {} episodes from {}",
                    command.episodes, command.first_episode
                );
                self.run = Some(command.clone());
                self.noise.restart();
                self.completed = 0;
                self.state = DeviceState::Running;
                self.next_deadline_us = self.clock.now_us();
            }
            HostMessage::Stop => {
                self.end_session(EpisodeEndReason::Stopped);
                self.link.forget_kept();
                self.last_run = None;
                self.answer(AckTopic::Stop, Ok(()));
            }
            &HostMessage::Heartbeat { sequence } => {
                self.last_host_sequence = sequence;
            }
            HostMessage::PlantParams(params) => {
                let (topic, result) = crate::plant::params::apply(&mut self.plant, params);
                self.answer(topic, result);
            }
            HostMessage::Observe => {
                self.start_observing();
                self.answer(AckTopic::Observe, Ok(()));
            }
            HostMessage::Pulse(pulse) => {
                let result = self.start_pulse(pulse);
                self.answer(AckTopic::Pulse, result);
            }
            HostMessage::Release(mark) => self.link.release(mark),
            HostMessage::Resend(range) => self.resend(range),
            &HostMessage::BatchLimit { values } => {
                let one_record = self.layout.width() as u16;
                self.batch_limit = values.clamp(one_record, TRANSITION_BATCH_VALUES as u16);
            }
            HostMessage::Received(range) => self.link.release_received(range),
        }
    }

    /// Answers a `Hello` with what this device is. Not inlined, like [`Device::answer`]
    /// and [`Device::resend`]: a `DeviceMessage` is as large as its largest variant (a
    /// transition batch, about 1 KB), and each one built in the handler's own frame would
    /// sit under every other handler's chain.
    #[inline(never)]
    fn send_hello(&mut self) {
        let info = DeviceInfo {
            protocol_version: PROTOCOL_VERSION,
            firmware_version: FIRMWARE_VERSION,
            plant: self.description.clone(),
            policy_capacity: u32::try_from(CAP).unwrap_or(u32::MAX),
            active_policy: self.active_policy(),
            action_rate_limit: self
                .config
                .action_rate_limit
                .map(|limit| limit.to_wire())
                .unwrap_or_default(),
        };
        self.send_control(&DeviceMessage::Hello(info));
    }

    /// Serves a resend request from the retransmit ring (not inlined: see
    /// [`Device::send_hello`]). A range sent before but no longer
    /// kept (evicted, or asked for too often) is answered `NotRetained`; a range not sent
    /// yet (the host probing the episode in progress) needs no answer: it is coming.
    #[inline(never)]
    fn resend(&mut self, range: &StepRange) {
        let outcome = self.link.resend(range);
        if outcome.served > 0 {
            return;
        }
        if outcome.exhausted > 0 || self.was_sent(range) {
            if outcome.exhausted == 0 {
                self.link.count_refused_resend();
            }
            self.send_control(&DeviceMessage::NotRetained(*range));
        } else {
            self.link.count_refused_resend();
        }
    }

    /// Whether the start of `range` lies before what the run has yet to send (or the range
    /// is of no episode this device can still produce).
    fn was_sent(&self, range: &StepRange) -> bool {
        if let Some(ep) = self.episode.as_ref() {
            return episode_before(range.episode, ep.id)
                || (range.episode == ep.id && range.from_step < ep.batch.first_step);
        }
        match self.run.as_ref() {
            // Between two episodes of a run: the next one has not started.
            Some(run) => episode_before(
                range.episode,
                run.first_episode.wrapping_add(self.completed),
            ),
            None => true,
        }
    }

    /// Ends the episode under way (if any) with `reason`, and goes idle with the plant safe.
    fn end_session(&mut self, reason: EpisodeEndReason) {
        if self.episode.is_some() {
            self.observe_final();
            self.end_episode(reason);
        }
        self.plant.safe_state();
        self.run = None;
        self.state = DeviceState::Idle;
    }

    /// Acknowledges or refuses a command (not inlined: see [`Device::send_hello`]).
    #[inline(never)]
    fn answer(&mut self, topic: AckTopic, result: Result<(), RefusalReason>) {
        let message = match result {
            Ok(()) => DeviceMessage::Ack(topic),
            Err(reason) => {
                debug!("refused a command");
                DeviceMessage::Refused(Refusal { topic, reason })
            }
        };
        self.send_control(&message);
    }

    /// Tells the host's user something in one line (truncated to fit).
    fn send_log(&mut self, text: &str) {
        let mut line = heapless::String::new();
        for c in text.chars() {
            if line.push(c).is_err() {
                break;
            }
        }
        self.send_control(&DeviceMessage::Log(LogLine { text: line }));
    }

    fn send_control(&mut self, message: &DeviceMessage) {
        // A dropped control message is logged by the link; the host retries.
        let _ = self.link.send(message, Priority::Control);
    }

    // ----- episodes -------------------------------------------------------------------

    fn run_due(&mut self, now: u64) {
        if self.episode.is_none() {
            if self.pending_end.is_some() {
                return;
            }
            if !self.start_episode(now) {
                return;
            }
        }
        if !self.plant_settled(now) {
            return;
        }
        if now >= self.next_deadline_us {
            self.control_step(now);
        }
    }

    /// Starts the next episode of the run; false if the run is over.
    fn start_episode(&mut self, now: u64) -> bool {
        let Some(run) = self.run.as_ref() else {
            self.state = DeviceState::Idle;
            return false;
        };
        if run.episodes != 0 && self.completed >= run.episodes {
            self.run = None;
            self.state = DeviceState::Idle;
            return false;
        }
        let id = run.first_episode.wrapping_add(self.completed);
        let seed = run.seed;
        if self.swap_staged() {
            info!("policy {} now running", self.active_policy().unwrap_or(0));
        }
        let Some(version) = self.active_policy() else {
            self.run = None;
            self.state = DeviceState::Idle;
            return false;
        };
        self.plant
            .vary(episode_seed(seed, id, EpisodeStream::PlantVariation));
        self.plant
            .reset(episode_seed(seed, id, EpisodeStream::InitialState));
        self.sampler
            .reseed(episode_seed(seed, id, EpisodeStream::Exploration));
        resting_action(&self.description.action, &mut self.applied);
        self.next_deadline_us = self.next_deadline_us.max(now);
        self.episode = Some(CurrentEpisode {
            id,
            steps: 0,
            episode_return: 0.0,
            worst_step_us: 0,
            missed_deadlines: 0,
            rate_limited_steps: 0,
            batch: empty_batch(id, 0, version),
            settled: false,
        });
        self.next_settle_us = now;
        true
    }

    /// Whether the episode's plant is ready for its first step; asks it once per settle
    /// tick while it is not (a real plant centring its arm), and faults when it cannot be.
    fn plant_settled(&mut self, now: u64) -> bool {
        let Some(ep) = self.episode.as_mut() else {
            return false;
        };
        if ep.settled {
            return true;
        }
        if now < self.next_settle_us {
            return false;
        }
        match self.plant.settle() {
            Settling::Ready => {
                ep.settled = true;
                // The episode's clock starts when the plant is ready, on the control grid
                // if it was ready at once (a model plant: steps stay one period apart
                // across episodes), else now (a real reset that took several periods is
                // no missed deadline).
                self.next_deadline_us = self.next_deadline_us.max(now);
                true
            }
            Settling::Busy => {
                self.next_settle_us = now.saturating_add(self.plant.settle_tick_us().max(1));
                false
            }
            Settling::Failed => {
                self.fault(EpisodeEndReason::Fault);
                false
            }
        }
    }

    fn control_step(&mut self, started: u64) {
        let late_by = started.saturating_sub(self.next_deadline_us);
        let missed = late_by > self.period_us;
        self.next_deadline_us = if missed {
            started + self.period_us
        } else {
            self.next_deadline_us + self.period_us
        };
        let outcome = self.step_once();
        let elapsed = self.clock.now_us().saturating_sub(started);
        if let Some(ep) = self.episode.as_mut() {
            if missed {
                ep.missed_deadlines = ep.missed_deadlines.saturating_add(1);
            }
            ep.worst_step_us = ep
                .worst_step_us
                .max(u32::try_from(elapsed).unwrap_or(u32::MAX));
        }
        match outcome {
            StepResult::Continue => {}
            StepResult::End(reason) => {
                if reason != EpisodeEndReason::Fault {
                    self.observe_final();
                }
                self.end_episode(reason);
            }
            StepResult::Fault => self.fault(EpisodeEndReason::Fault),
        }
    }

    /// Observe → forward → sample → clamp → actuate → reward → record. The steps are split
    /// into functions for reading; they are inlined back into one (see `firmware/BENCHMARKS.md`).
    fn step_once(&mut self) -> StepResult {
        let Some(obs) = self.obs.get_mut(..self.layout.obs_dim()) else {
            return StepResult::Fault;
        };
        self.plant.observe(obs);
        if !all_finite(obs) {
            warn!("non-finite observation");
            return StepResult::Fault;
        }
        if self.plant.fault().is_some() {
            return StepResult::Fault;
        }
        let Some(view) = self.store.view() else {
            return StepResult::Fault;
        };
        let head = view.spec().head;
        let Some(out) = self.output.get_mut(..head.output_dim()) else {
            return StepResult::Fault;
        };
        let Ok(features) = view.forward_with_features(obs, &mut self.scratch, out) else {
            return StepResult::Fault;
        };
        let mode = self.run.as_ref().map_or(RunMode::Deterministic, |r| r.mode);
        let choice = ActionChoice {
            head,
            outputs: out,
            log_std: view.log_std(),
            features,
            mode,
            space: &self.description.action,
        };
        let noise = &mut self.noise;
        let Some(log_prob) = choice.choose(&mut self.sampler, noise, &mut self.action) else {
            warn!("non-finite action");
            return StepResult::Fault;
        };
        let Some(outcome) = self.actuate(head) else {
            return StepResult::Fault;
        };
        if !outcome.reward.is_finite() {
            warn!("non-finite reward");
            return StepResult::Fault;
        }
        if self.plant.fault().is_some() {
            return StepResult::Fault;
        }
        self.record_step(log_prob, outcome)
    }

    /// Hands the action chosen into `self.action` to the plant: a continuous one clamped to
    /// the plant's bounds, then rate limited when the device has a limit (the record keeps
    /// it as sampled), a discrete one as its index.
    #[inline(always)]
    fn actuate(&mut self, head: PolicyHead) -> Option<StepOutcome> {
        match head {
            PolicyHead::Gaussian { action_dim }
            | PolicyHead::GaussianSde(SdeHead { action_dim, .. }) => {
                let dim = action_dim as usize;
                let mut applied = [0.0f32; MAX_ACTION_DIM];
                let applied = applied.get_mut(..dim)?;
                applied.copy_from_slice(self.action.get(..dim)?);
                clamp_continuous(&self.description.action, applied);
                if let Some(limit) = self.config.action_rate_limit
                    && limit.apply(self.applied.get_mut(..dim)?, applied)
                    && let Some(ep) = self.episode.as_mut()
                {
                    ep.rate_limited_steps = ep.rate_limited_steps.saturating_add(1);
                }
                Some(self.plant.actuate(Action::Continuous(applied)))
            }
            PolicyHead::Categorical { .. } => {
                let index = *self.action.first()? as usize;
                Some(self.plant.actuate(Action::Discrete(index)))
            }
        }
    }

    /// Counts the step, records (observation, sampled action, reward, log-probability) —
    /// sending the batch first when it is full — and says whether the episode goes on.
    #[inline(always)]
    fn record_step(&mut self, log_prob: f32, outcome: StepOutcome) -> StepResult {
        let Some(ep) = self.episode.as_mut() else {
            return StepResult::Fault;
        };
        let step = ep.steps;
        ep.steps = ep.steps.saturating_add(1);
        ep.episode_return += outcome.reward;
        self.stats.steps += 1;
        let limit = usize::from(self.batch_limit);
        let full = !ep.batch.has_room_for(&self.layout)
            || ep.batch.values.len() + self.layout.width() > limit;
        if full && !flush_batch(&mut self.link, ep, step, &self.layout) {
            return StepResult::End(EpisodeEndReason::Overrun);
        }
        let (Some(observation), Some(action)) = (
            self.obs.get(..self.layout.obs_dim()),
            self.action.get(..self.layout.action_width()),
        ) else {
            return StepResult::Fault;
        };
        let record = TransitionRecord {
            observation,
            action,
            reward: outcome.reward,
            log_prob,
        };
        if ep.batch.push_record(&self.layout, &record).is_err() {
            // Cannot happen with a valid plant description (a record is far below a batch).
            return StepResult::Fault;
        }
        if outcome.terminated {
            StepResult::End(EpisodeEndReason::Terminated)
        } else if ep.steps >= self.description.episode_steps {
            StepResult::End(EpisodeEndReason::Truncated)
        } else {
            StepResult::Continue
        }
    }

    /// Reads the plant's observation into `self.obs` for an episode-end report.
    fn observe_final(&mut self) {
        if let Some(obs) = self.obs.get_mut(..self.layout.obs_dim()) {
            self.plant.observe(obs);
        }
    }

    /// Plant to safe state, episode (if any) ended with `reason`, device in safe stop.
    fn fault(&mut self, reason: EpisodeEndReason) {
        self.plant.safe_state();
        if let Some(fault) = self.plant.fault() {
            error!("plant fault: {}", fault.as_str());
            self.send_log(fault.as_str());
        }
        if self.episode.is_some() {
            self.end_episode(reason);
        }
        self.run = None;
        // A repeated run command must start the run again after a fault.
        self.last_run = None;
        self.state = DeviceState::SafeStop;
    }

    /// Flushes the last records, reports the end, puts the plant in its safe state and moves
    /// the run on.
    fn end_episode(&mut self, mut reason: EpisodeEndReason) {
        let Some(mut ep) = self.episode.take() else {
            return;
        };
        let keeps_data = matches!(
            reason,
            EpisodeEndReason::Terminated | EpisodeEndReason::Truncated | EpisodeEndReason::Stopped
        );
        let next_step = ep.steps;
        if keeps_data && !flush_batch(&mut self.link, &mut ep, next_step, &self.layout) {
            reason = EpisodeEndReason::Overrun;
        }
        self.plant.safe_state();
        let mut final_obs = Vec::new();
        let _ = final_obs.extend_from_slice(self.obs.get(..self.layout.obs_dim()).unwrap_or(&[]));
        let end = EpisodeEnd {
            episode: ep.id,
            policy_version: ep.batch.policy_version,
            length: ep.steps,
            episode_return: ep.episode_return,
            reason,
            final_obs,
            worst_step_us: ep.worst_step_us,
            missed_deadlines: ep.missed_deadlines,
            rate_limited_steps: ep.rate_limited_steps,
        };
        debug!("episode {} ended after {} steps", ep.id, ep.steps);
        self.stats.episodes = self.stats.episodes.wrapping_add(1);
        self.completed = self.completed.wrapping_add(1);
        if self
            .run
            .as_ref()
            .is_some_and(|r| r.episodes != 0 && self.completed >= r.episodes)
        {
            self.run = None;
            self.state = DeviceState::Idle;
        }
        // An older unsent end goes first; this one waits its turn.
        self.queue_pending_end();
        if self.pending_end.is_none() {
            if let Err(end) = send_end(&mut self.link, end) {
                self.pending_end = Some(end);
            }
        } else {
            // Two ends waiting: the older one is kept, this one is lost. Only a link stalled
            // for a whole episode gets here.
            warn!("outgoing queue full: episode end dropped");
        }
    }

    /// Makes a staged policy the running one (at an episode boundary) and prepares the
    /// gSDE state for it. Returns whether a swap happened.
    fn swap_staged(&mut self) -> bool {
        if !self.store.swap_staged() {
            return false;
        }
        if let Some(view) = self.store.view()
            && !self.noise.load(&view)
        {
            // Unreachable after the commit's checks; an exploring step will fault.
            warn!("gSDE noise matrix could not be set up");
        }
        true
    }

    fn queue_pending_end(&mut self) {
        if let Some(end) = self.pending_end.take()
            && let Err(end) = send_end(&mut self.link, end)
        {
            self.pending_end = Some(end);
        }
    }

    fn heartbeat(&mut self) {
        let now = self.clock.now_us();
        if now < self.next_heartbeat_us {
            return;
        }
        self.next_heartbeat_us = now.saturating_add(self.config.heartbeat_period_us.max(1));
        let beat = DeviceMessage::Heartbeat(Heartbeat {
            uptime_us: now.wrapping_sub(self.boot_us) as u32,
            state: self.state,
            last_host_sequence: self.last_host_sequence,
        });
        // Heartbeats are periodic: one that does not fit is simply skipped.
        let _ = self.link.send(&beat, Priority::Data);
    }
}

/// What one control step led to.
enum StepResult {
    Continue,
    End(EpisodeEndReason),
    Fault,
}

/// What the policy's output and the run mode make of one step's action.
struct ActionChoice<'a> {
    head: PolicyHead,
    /// Gaussian mean or categorical logits.
    outputs: &'a [f32],
    /// The Gaussian's log standard deviations.
    log_std: Option<&'a [f32]>,
    /// The features the output layer read (a gSDE head's noise comes from them).
    features: &'a [f32],
    mode: RunMode,
    space: &'a ActionSpace,
}

impl ActionChoice<'_> {
    /// Writes the action into `action` (a sampled or mean vector, or a choice's index as
    /// f32) and returns its log-probability (0 in deterministic mode); `None` when the
    /// outputs give no finite action.
    #[inline(always)]
    fn choose<const N: usize>(
        &self,
        sampler: &mut Sampler,
        noise: &mut SdeNoise<N>,
        action: &mut [f32],
    ) -> Option<f32> {
        match self.head {
            PolicyHead::Gaussian { action_dim } => {
                let dim = action_dim as usize;
                let (action, mean) = (action.get_mut(..dim)?, self.outputs.get(..dim)?);
                let log_prob = match self.mode {
                    RunMode::Explore => sampler.gaussian(mean, self.log_std?, action),
                    RunMode::Deterministic => {
                        action.copy_from_slice(mean);
                        0.0
                    }
                };
                (all_finite(action) && log_prob.is_finite()).then_some(log_prob)
            }
            PolicyHead::GaussianSde(head) => {
                let dim = head.action_dim as usize;
                let (action, mean) = (action.get_mut(..dim)?, self.outputs.get(..dim)?);
                let log_prob = match self.mode {
                    RunMode::Explore => noise.explore(sampler, self.features, mean, action)?,
                    RunMode::Deterministic => {
                        action.copy_from_slice(mean);
                        0.0
                    }
                };
                (all_finite(action) && log_prob.is_finite()).then_some(log_prob)
            }
            PolicyHead::Categorical { .. } => {
                let (index, log_prob) = match self.mode {
                    RunMode::Explore => sampler.categorical(self.outputs)?,
                    RunMode::Deterministic => (argmax(self.outputs)?, 0.0),
                };
                *action.first_mut()? = clamp_discrete(self.space, index)? as f32;
                Some(log_prob)
            }
        }
    }
}

fn empty_batch(episode: u32, first_step: u32, policy_version: u32) -> TransitionBatch {
    TransitionBatch {
        episode,
        first_step,
        policy_version,
        values: Vec::new(),
    }
}

/// Queues the episode's records (if any) as one batch, kept for resending, and starts a new
/// batch at `next_step`. False if the outgoing queue could not take it.
fn flush_batch<L, const TX: usize>(
    link: &mut LinkEndpoint<L, TX>,
    ep: &mut CurrentEpisode,
    next_step: u32,
    layout: &RecordLayout,
) -> bool
where
    L: Read + ReadReady + Write + WriteReady,
{
    if ep.batch.values.is_empty() {
        ep.batch.first_step = next_step;
        return true;
    }
    let values = ep.batch.values.len();
    let records = (values / layout.width().max(1)) as u16;
    let key = DataKey::batch(ep.id, ep.batch.first_step, records);
    let fresh = empty_batch(ep.id, next_step, ep.batch.policy_version);
    let message = DeviceMessage::Transitions(core::mem::replace(&mut ep.batch, fresh));
    let bound = TransitionBatch::max_frame_len(values);
    let queued = link.send_kept(&message, key, bound, Priority::Data).is_ok();
    if !queued {
        debug!("outgoing queue full: episode {} overran", ep.id);
    }
    queued
}

/// Queues an episode end, kept for resending (it may use the control reserve: an episode
/// that overran must still say so); gives it back when the queue is full.
fn send_end<L, const TX: usize>(
    link: &mut LinkEndpoint<L, TX>,
    end: EpisodeEnd,
) -> Result<(), EpisodeEnd>
where
    L: Read + ReadReady + Write + WriteReady,
{
    let key = DataKey::end(end.episode, end.length);
    let message = DeviceMessage::EpisodeEnd(end);
    match link.send_kept(&message, key, EpisodeEnd::MAX_FRAME_LEN, Priority::Control) {
        Ok(_) => Ok(()),
        Err(_) => match message {
            DeviceMessage::EpisodeEnd(end) => Err(end),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
