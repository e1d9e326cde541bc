//! One collection round on one device: upload the policy if needed, run, receive until the
//! step quota (or episode count) is met, stop.
//!
//! What the link loses is recovered while the round runs: a missing stretch of steps (a
//! later step or episode arrived first) is asked for again from the device's retransmit
//! ring ([`super::resend`]), received data is released so the device can forget it, and a
//! stretch that cannot be had cuts its episode there ([`super::gap`]). Episodes are handed
//! to the learner in id order, each once nothing more of it is awaited, so a round whose
//! losses were all recovered gives the learner exactly what a clean link would have.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_firmware::rate_limit::ActionRateLimit;

use tether_shared::message::{
    DeviceState, EpisodeEnd, RecordLayout, ReleaseMark, RunCommand, RunMode, StepRange,
    TRANSITION_BATCH_VALUES, TransitionBatch, episode_before,
};
use tether_shared::{DeviceMessage, HostMessage, PlantDescription, PolicySpec};

use super::crosscheck::log_probs_agree;
use super::episode::{CollectedEpisode, EpisodeAssembler, Fed, Finished, Rejection};
use super::resend::ResendTracker;
use crate::device::frame_sizing::LineErrors;
use crate::device::{DeviceClient, DeviceError};
use crate::run::config::TimeoutsConfig;

/// What a worker is asked to collect.
#[derive(Clone, Debug)]
pub struct CollectRequest {
    /// Policy version (uploaded if the device does not run it yet).
    pub version: u32,
    /// Shape of the policy.
    pub spec: PolicySpec,
    /// Flat f32 parameters in the shared layout.
    pub params: Arc<Vec<f32>>,
    /// Id of the first episode of this round.
    pub first_episode: u32,
    /// Seed for the device's noise and initial states this round.
    pub seed: u64,
    /// Sampling (training) or deterministic (evaluation).
    pub mode: RunMode,
    /// Stop after this many kept steps, cutting the last episode (training).
    pub steps: Option<usize>,
    /// Stop after this many episodes have ended (evaluation).
    pub episodes: Option<u32>,
    /// Give up on a device silent for this long.
    pub silence_timeout: Duration,
    /// How lost data is recovered.
    pub recovery: Recovery,
}

/// How a round recovers what the link loses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recovery {
    /// Requests for one lost stretch before its episode is cut there (0: cut at once).
    pub resend_attempts: u32,
    /// A device that sends no transition data for this long (heartbeats or not) is
    /// stalled: the round fails and the device is reconnected.
    pub data_timeout: Duration,
}

impl Default for Recovery {
    /// The default `[timeouts]` resend attempts, and a minute without data.
    fn default() -> Self {
        Recovery {
            resend_attempts: TimeoutsConfig::default().resend_attempts,
            data_timeout: Duration::from_secs(60),
        }
    }
}

impl Recovery {
    /// The recovery the `[timeouts]` table configures for devices of `plant`: the data
    /// timeout is the longest an episode can take in real time plus the silence timeout.
    pub fn for_plant(timeouts: &TimeoutsConfig, plant: &PlantDescription) -> Self {
        let episode_s = f64::from(plant.episode_steps) * plant.control_period_us() as f64 * 1e-6;
        Recovery {
            resend_attempts: timeouts.resend_attempts,
            data_timeout: Duration::from_secs_f64(
                (episode_s + timeouts.silence_s).clamp(0.01, 1e6),
            ),
        }
    }
}

/// Counts of samples refused or lost during a round, by rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejectionCounts {
    /// Frames the decoder threw away (CRC, overflow, undecodable).
    pub rejected_frames: u64,
    /// Episodes discarded for any reason below.
    pub discarded_episodes: u64,
    /// ...because of a gap in step indices (lost frame).
    pub gaps: u64,
    /// ...because of a stale or unexpected policy version.
    pub stale: u64,
    /// ...because of malformed or non-finite values.
    pub malformed: u64,
    /// ...because the device reported overrun or fault.
    pub device_discarded: u64,
    /// ...because the summary disagreed with the received steps, or an episode went missing.
    pub inconsistent: u64,
    /// ...because the host's log-probability disagreed with the device's.
    pub log_prob_mismatch: u64,
    /// ...because the round they belonged to failed (device reset, link lost, device
    /// dropped).
    ///
    /// Not serialized (like the counts below): the checkpoint's postcard layout of these
    /// counts stays that of format version 1; `metrics.jsonl` keeps them per iteration.
    #[serde(skip)]
    pub interrupted: u64,
    /// Times the device was re-handshaken (and the round restarted) after a failure.
    #[serde(skip)]
    pub reconnects: u64,
    /// Stretches of lost steps the host asked the device to send again.
    #[serde(skip)]
    pub resend_requests: u64,
    /// Steps that arrived only because they were asked for again (salvaged).
    #[serde(skip)]
    pub recovered_steps: u64,
    /// Episodes cut into segments at a gap that could not be recovered.
    #[serde(skip)]
    pub cut_episodes: u64,
    /// Steps of kept episodes the learner did not get: the unrecovered gaps, and the step
    /// before each (it has no next observation to bootstrap from).
    #[serde(skip)]
    pub lost_steps: u64,
}

impl RejectionCounts {
    fn count(&mut self, rejection: Rejection) {
        self.discarded_episodes += 1;
        match rejection {
            Rejection::Gap => self.gaps += 1,
            Rejection::StalePolicy | Rejection::WrongEpisode => self.stale += 1,
            Rejection::Malformed => self.malformed += 1,
            Rejection::DeviceDiscarded => self.device_discarded += 1,
            Rejection::Inconsistent => self.inconsistent += 1,
            Rejection::LogProbMismatch => self.log_prob_mismatch += 1,
        }
    }

    /// Adds another round's counts.
    pub fn add(&mut self, other: &RejectionCounts) {
        self.rejected_frames += other.rejected_frames;
        self.discarded_episodes += other.discarded_episodes;
        self.gaps += other.gaps;
        self.stale += other.stale;
        self.malformed += other.malformed;
        self.device_discarded += other.device_discarded;
        self.inconsistent += other.inconsistent;
        self.log_prob_mismatch += other.log_prob_mismatch;
        self.interrupted += other.interrupted;
        self.reconnects += other.reconnects;
        self.resend_requests += other.resend_requests;
        self.recovered_steps += other.recovered_steps;
        self.cut_episodes += other.cut_episodes;
        self.lost_steps += other.lost_steps;
    }
}

/// What one device delivered in a round.
#[derive(Clone, Debug, Default)]
pub struct DeviceRollout {
    /// Accepted episodes (and segments of cut ones) in the order the device ran them.
    pub episodes: Vec<CollectedEpisode>,
    /// What was refused.
    pub rejections: RejectionCounts,
    /// The device's action rate limit (from its handshake), to know what its plant
    /// received.
    pub action_rate_limit: Option<ActionRateLimit>,
}

impl DeviceRollout {
    /// Steps in the accepted episodes.
    pub fn steps(&self) -> usize {
        self.episodes.iter().map(CollectedEpisode::len).sum()
    }
}

/// A round fails once this many episodes in a row were discarded: the link is too
/// unreliable to deliver a whole episode, and waiting longer would never meet the quota.
pub const MAX_DISCARDS_IN_A_ROW: u32 = 50;

/// Episodes awaiting data at once, at most; a device further ahead makes the host settle
/// the oldest with what it has (bounds the host's state whatever the device sends).
pub const MAX_OPEN_EPISODES: usize = 64;

/// The device's batch size is changed only when the recommendation moves by more than
/// this fraction of it (the error-rate estimate wanders a little with every frame).
const BATCH_LIMIT_HYSTERESIS: f64 = 0.2;

/// Runs one collection round on `client`.
pub fn collect(
    client: &mut DeviceClient,
    active_version: &mut Option<u32>,
    request: &CollectRequest,
) -> Result<DeviceRollout, DeviceError> {
    let mut partial = DeviceRollout::default();
    collect_into(client, active_version, request, &mut partial).map(|()| partial)
}

/// Like [`collect`], but what was gathered stays in `output` when the round fails (so a
/// caller that retries can account for what the failed attempt lost).
pub fn collect_into(
    client: &mut DeviceClient,
    active_version: &mut Option<u32>,
    request: &CollectRequest,
    output: &mut DeviceRollout,
) -> Result<(), DeviceError> {
    let frames_before = client.link().rejected_frames();
    let result = run_round(client, active_version, request, output);
    output.rejections.rejected_frames = client.link().rejected_frames() - frames_before;
    result
}

fn run_round(
    client: &mut DeviceClient,
    active_version: &mut Option<u32>,
    request: &CollectRequest,
    output: &mut DeviceRollout,
) -> Result<(), DeviceError> {
    output.action_rate_limit = ActionRateLimit::new(&client.info().action_rate_limit).ok();
    if *active_version != Some(request.version) {
        // Whatever the device ran before is unknown until this upload succeeds.
        *active_version = None;
        client.upload(request.version, &request.spec, &request.params)?;
        *active_version = Some(request.version);
    }
    client.start(RunCommand {
        first_episode: request.first_episode,
        episodes: request.episodes.unwrap_or(0),
        seed: request.seed,
        mode: request.mode,
    })?;

    let mut round = Round {
        layout: RecordLayout::of_plant(&client.info().plant),
        version: request.version,
        quota: request.steps.unwrap_or(usize::MAX),
        episodes_wanted: request.episodes,
        kept: 0,
        episodes_ended: 0,
        open: VecDeque::new(),
        next_episode: request.first_episode,
        discarded_in_a_row: 0,
        tracker: ResendTracker::new(request.recovery.resend_attempts),
        received: Vec::new(),
        output,
        uploaded: (request.mode == RunMode::Explore).then_some(UploadedPolicy {
            spec: &request.spec,
            params: &request.params,
        }),
    };

    let result = receive(client, &mut round, request);
    round.output.rejections.resend_requests += round.tracker.requests();
    if let Err(e) = result {
        round.interrupt();
        return Err(e);
    }
    // A round that ended by episode count has left the device idle already; stop anyway so
    // the plant is safe and stale frames are drained before the next round.
    client.stop()?;
    Ok(())
}

/// The link-level bookkeeping of a round's receive loop: when the device was last heard,
/// what was released, which batch size it was told.
struct LinkState {
    last_frame: Instant,
    last_data: Instant,
    /// Tail probes (with the release mark repeated) sent since data last arrived, and when
    /// the next is due: each waits twice as long as the one before, without the resend
    /// requests' limit on doubling, so a device that went silent is not flooded (a stopped
    /// reader's pty fills, and a 1 ms RTO would send a probe every 8 ms).
    probes: u32,
    next_probe: Instant,
    /// Bytes received when last looked: a line still delivering bytes (a slow one, part-way
    /// through a long frame) is not quiet, and probing it would only queue copies of frames
    /// already on their way.
    bytes_seen: u64,
    released: Option<ReleaseMark>,
    batch_limit: usize,
}

impl LinkState {
    fn data_arrived(&mut self, now: Instant, client: &DeviceClient) {
        self.last_data = now;
        self.probes = 0;
        self.next_probe = now + client.timeout(0);
    }

    /// Puts the next probe off while bytes keep arriving.
    fn bytes_arrived(&mut self, now: Instant, client: &DeviceClient) {
        let bytes = client.link().bytes_received();
        if bytes != self.bytes_seen {
            self.bytes_seen = bytes;
            self.next_probe = self.next_probe.max(now + client.rtt().backoff(self.probes));
        }
    }
}

/// Receives until the round is done.
fn receive(
    client: &mut DeviceClient,
    round: &mut Round<'_>,
    request: &CollectRequest,
) -> Result<(), DeviceError> {
    let now = Instant::now();
    let mut link = LinkState {
        last_frame: now,
        last_data: now,
        probes: 0,
        next_probe: now + client.timeout(0),
        bytes_seen: client.link().bytes_received(),
        released: None,
        batch_limit: TRANSITION_BATCH_VALUES,
    };
    while !round.done() {
        let wait = client.timeout(0).min(request.silence_timeout);
        let message = client.next_message(wait)?;
        let now = Instant::now();
        if message.is_some() {
            link.last_frame = now;
        }
        link.bytes_arrived(now, client);
        match message {
            Some(DeviceMessage::Transitions(batch)) => {
                link.data_arrived(now, client);
                round.on_batch(&batch, client, now);
            }
            Some(DeviceMessage::EpisodeEnd(end)) => {
                link.data_arrived(now, client);
                round.on_end(&end);
            }
            Some(DeviceMessage::NotRetained(range)) => round.on_not_retained(&range),
            Some(DeviceMessage::Heartbeat(beat)) if left_the_run(beat.state, request) => {
                // The device left the run (it reset, or faulted into its safe state): it
                // sends nothing more until it is told again, so waiting is pointless.
                return Err(DeviceError::NotRunning {
                    device: client.name().to_string(),
                    state: beat.state,
                });
            }
            _ => {}
        }
        round.advance();
        if round.done() {
            break;
        }
        // Frames already read are decoded first: the release and acknowledgements then
        // cover all of them at once (a message each instead of one per frame), and are late
        // only by the time it takes to decode what is in hand.
        if !client.link().holds_a_frame_end() {
            keep_the_link_going(client, round, &mut link, now)?;
        }
        check_timeouts(client, round, &link, request, now)?;
    }
    Ok(())
}

/// Whether a heartbeat's state means the device stopped running the round: any state but
/// running, except idle after a run of a fixed number of episodes (it finished; the host
/// may still be recovering what the link lost of it).
fn left_the_run(state: DeviceState, request: &CollectRequest) -> bool {
    match state {
        DeviceState::Running => false,
        DeviceState::Idle => request.episodes.is_none(),
        DeviceState::SafeStop | DeviceState::Observing => true,
    }
}

/// Sends what the round needs of the device now: requests for lost stretches, the release
/// mark, the batch size the line calls for, and — when no data came for a timeout — a probe
/// for the tail of the newest episode (its last frames may all have been lost).
fn keep_the_link_going(
    client: &mut DeviceClient,
    round: &mut Round<'_>,
    link: &mut LinkState,
    now: Instant,
) -> Result<(), DeviceError> {
    for range in round.requests_due(client, now) {
        client.send(&HostMessage::Resend(range))?;
    }
    let probe_due = now >= link.next_probe;
    let mark = round.release_mark();
    for range in round.received.drain(..) {
        if !mark.releases_range(&range) {
            client.send(&HostMessage::Received(range))?;
        }
    }
    if link.released != Some(mark) || probe_due {
        client.send(&HostMessage::Release(mark))?;
        link.released = Some(mark);
    }
    if probe_due {
        client.send(&HostMessage::Resend(round.tail_probe()))?;
        link.probes += 1;
        link.next_probe = now + client.rtt().backoff(link.probes);
    }
    let mut downlink = LineErrors::new();
    downlink.set_totals(
        client.link().bytes_received(),
        client.link().rejected_frames(),
    );
    let width = round.layout.width().max(1);
    let best = downlink.best_values(width, TRANSITION_BATCH_VALUES) / width * width;
    let change = (best as f64 - link.batch_limit as f64).abs() / link.batch_limit as f64;
    if change > BATCH_LIMIT_HYSTERESIS {
        client.send(&HostMessage::BatchLimit {
            values: best as u16,
        })?;
        link.batch_limit = best;
    }
    Ok(())
}

/// The round fails on a silent device, a device that sends no data, and a link that spoils
/// episode after episode.
fn check_timeouts(
    client: &mut DeviceClient,
    round: &Round<'_>,
    link: &LinkState,
    request: &CollectRequest,
    now: Instant,
) -> Result<(), DeviceError> {
    if now.duration_since(link.last_frame) >= request.silence_timeout {
        return Err(DeviceError::Silent {
            device: client.name().to_string(),
            waited: request.silence_timeout,
        });
    }
    if now.duration_since(link.last_data) >= request.recovery.data_timeout {
        return Err(DeviceError::NoData {
            device: client.name().to_string(),
            waited: request.recovery.data_timeout,
        });
    }
    if round.discarded_in_a_row >= MAX_DISCARDS_IN_A_ROW {
        // Leave the plant safe; the link is the problem, not the device.
        let _ = client.stop();
        return Err(DeviceError::Unreliable {
            device: client.name().to_string(),
            discarded: round.discarded_in_a_row,
            rejected_frames: client.link().rejected_frames(),
        });
    }
    Ok(())
}

/// The policy uploaded for a round: what the device's log-probabilities are checked
/// against.
struct UploadedPolicy<'a> {
    spec: &'a PolicySpec,
    /// Flat f32 parameters in the shared layout.
    params: &'a [f32],
}

/// State of one round.
struct Round<'a> {
    layout: RecordLayout,
    version: u32,
    quota: usize,
    episodes_wanted: Option<u32>,
    kept: usize,
    episodes_ended: u32,
    /// Episodes awaiting data, consecutive ids from `next_episode` on.
    open: VecDeque<EpisodeAssembler>,
    /// Id of the oldest episode not handed on yet.
    next_episode: u32,
    /// Episodes discarded since the last accepted one.
    discarded_in_a_row: u32,
    tracker: ResendTracker,
    /// Data received since the link was last kept going: what the release mark does not
    /// cover of it is acknowledged selectively.
    received: Vec<StepRange>,
    output: &'a mut DeviceRollout,
    /// Policy to cross-check the device's log-probabilities against (exploring rounds only:
    /// deterministic actions carry no log-probability).
    uploaded: Option<UploadedPolicy<'a>>,
}

impl Round<'_> {
    fn done(&self) -> bool {
        self.kept >= self.quota
            || self
                .episodes_wanted
                .is_some_and(|n| self.episodes_ended >= n)
    }

    /// The assembler of `episode`, opening it (and those before it) if needed; `None` for
    /// an episode handed on already.
    fn assembler(&mut self, episode: u32) -> Option<&mut EpisodeAssembler> {
        if episode_before(episode, self.next_episode) {
            return None;
        }
        let mut offset = episode.wrapping_sub(self.next_episode) as usize;
        while offset >= MAX_OPEN_EPISODES {
            // Far ahead: the oldest is settled with what it has.
            self.settle_front();
            offset = episode.wrapping_sub(self.next_episode) as usize;
        }
        while self.open.len() <= offset {
            let id = self.next_episode.wrapping_add(self.open.len() as u32);
            self.open
                .push_back(EpisodeAssembler::new(self.layout, self.version, id));
        }
        self.open.get_mut(offset)
    }

    fn on_batch(&mut self, batch: &TransitionBatch, client: &mut DeviceClient, now: Instant) {
        if let Some(rtt) = self.tracker.answered(batch.episode, batch.first_step, now) {
            client.rtt_mut().sample(rtt);
        }
        let steps = (batch.values.len() / self.layout.width().max(1)) as u32;
        self.received.push(StepRange {
            episode: batch.episode,
            from_step: batch.first_step,
            to_step: batch.first_step.saturating_add(steps),
        });
        let Some(assembler) = self.assembler(batch.episode) else {
            return; // a straggler from an episode already handed on
        };
        if let Fed::Appended { filled, .. } = assembler.feed(batch) {
            self.output.rejections.recovered_steps += filled as u64;
        }
    }

    fn on_end(&mut self, end: &EpisodeEnd) {
        self.received.push(StepRange {
            episode: end.episode,
            from_step: end.length,
            to_step: StepRange::TO_END,
        });
        if let Some(assembler) = self.assembler(end.episode) {
            // A refused end spoils its episode; it is counted when handed on.
            let _ = assembler.set_end(end);
        }
    }

    fn on_not_retained(&mut self, range: &StepRange) {
        if let Some(assembler) = self.assembler(range.episode) {
            assembler.give_up(range.from_step, range.to_step);
        }
    }

    /// Hands on every settled episode at the front, and cuts at the step quota as soon as
    /// the front episode's first steps reach it.
    fn advance(&mut self) {
        while !self.done() {
            let room = self.quota - self.kept;
            let Some(front) = self.open.front() else {
                return;
            };
            if front.spoiled().is_none() && front.prefix() as usize > room {
                match front.cut_at(room) {
                    Ok(cut) => self.accept(cut),
                    Err(rejection) => self.reject(rejection),
                }
                return;
            }
            let ended = self.open.len() > 1;
            if !front.is_settled(ended) {
                return;
            }
            self.settle_front();
        }
    }

    /// Hands on the front episode with what it has (giving up whatever is missing).
    fn settle_front(&mut self) {
        let Some(mut front) = self.open.pop_front() else {
            return;
        };
        self.next_episode = self.next_episode.wrapping_add(1);
        for range in front.missing(true) {
            front.give_up(range.from_step, range.to_step);
        }
        self.episodes_ended = self.episodes_ended.saturating_add(1);
        if front.is_empty() && !front.has_end() && front.spoiled().is_none() {
            // Nothing of it ever came.
            self.reject(Rejection::Inconsistent);
            return;
        }
        match front.finish() {
            Ok(finished) => self.accept_finished(finished),
            Err(rejection) => self.reject(rejection),
        }
    }

    fn accept_finished(&mut self, finished: Finished) {
        let Finished {
            segments,
            lost_steps,
            cut,
        } = finished;
        if cut {
            self.output.rejections.cut_episodes += 1;
            self.output.rejections.lost_steps += lost_steps;
        }
        for segment in segments {
            if self.kept >= self.quota {
                return; // past the step quota: not lost, just not needed
            }
            let room = self.quota - self.kept;
            match segment.len() > room {
                true => match cut_segment(segment, room) {
                    Some(cut) => self.accept(cut),
                    None => self.reject(Rejection::Inconsistent),
                },
                false => self.accept(segment),
            }
        }
    }

    /// The stretches to ask the device for now, and those given up.
    fn requests_due(&mut self, client: &DeviceClient, now: Instant) -> Vec<StepRange> {
        let newest = self.open.len().saturating_sub(1);
        let missing: Vec<StepRange> = self
            .open
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.missing(i < newest))
            .collect();
        let due = self
            .tracker
            .due(&missing, now, |sends| client.timeout(sends));
        for range in &due.give_up {
            if let Some(assembler) = self.assembler(range.episode) {
                assembler.give_up(range.from_step, range.to_step);
            }
        }
        due.send
    }

    /// The host holds (or gave up) everything before this: every settled open episode,
    /// then the settled first steps of the oldest one that is not.
    fn release_mark(&self) -> ReleaseMark {
        let last = self.open.len().saturating_sub(1);
        for (i, episode) in self.open.iter().enumerate() {
            if episode.is_settled(i < last) {
                continue;
            }
            if let Some(step) = episode.settled_prefix() {
                return ReleaseMark {
                    episode: episode.episode(),
                    step,
                };
            }
        }
        ReleaseMark {
            episode: self.next_episode.wrapping_add(self.open.len() as u32),
            step: 0,
        }
    }

    /// A request for what may follow the last thing received (all of the last frames may
    /// have been lost): the rest of the newest episode, or the episode after it.
    fn tail_probe(&self) -> StepRange {
        let (episode, from_step) = match self.open.back() {
            Some(newest) if !newest.has_end() => (newest.episode(), newest.end_step()),
            Some(newest) => (newest.episode().wrapping_add(1), 0),
            None => (self.next_episode, 0),
        };
        StepRange {
            episode,
            from_step,
            to_step: StepRange::TO_END,
        }
    }

    /// The round failed: each episode in progress with data is lost.
    fn interrupt(&mut self) {
        for episode in &self.open {
            if !episode.is_empty() || episode.spoiled().is_some() {
                self.output.rejections.discarded_episodes += 1;
                self.output.rejections.interrupted += 1;
            }
        }
    }

    fn reject(&mut self, rejection: Rejection) {
        self.discarded_in_a_row += 1;
        self.output.rejections.count(rejection);
    }

    fn accept(&mut self, episode: CollectedEpisode) {
        if let Some(uploaded) = &self.uploaded
            && !log_probs_agree(uploaded.spec, uploaded.params, &episode)
        {
            self.reject(Rejection::LogProbMismatch);
            return;
        }
        self.discarded_in_a_row = 0;
        self.kept += episode.len();
        self.output.episodes.push(episode);
    }
}

/// `segment` cut after `keep` steps, bootstrapping from observation `keep`; `None` when it
/// is not longer than that.
fn cut_segment(mut segment: CollectedEpisode, keep: usize) -> Option<CollectedEpisode> {
    let bootstrap = segment.trajectory.records().get(keep)?.observation.to_vec();
    segment.trajectory.truncate(keep);
    segment.trajectory.end_truncated(&bootstrap).ok()?;
    segment.complete_return = None;
    segment.episode_length = None;
    segment.worst_step_us = 0;
    segment.missed_deadlines = 0;
    Some(segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{ClientConfig, DeviceLink};
    use crate::trpo::batch::EpisodeEnding;
    use tether_firmware::device::DeviceConfig;
    use tether_firmware::plant::AnyPlant;
    use tether_firmware::sim::{SimBoard, SimConfig, SimHandle};
    use tether_shared::policy::PolicySpec;

    fn pendulum_client() -> (DeviceClient, SimHandle) {
        let plant = AnyPlant::by_name("pendulum").expect("pendulum model");
        let config = SimConfig {
            device: DeviceConfig {
                watchdog_timeout_us: 0,
                ..DeviceConfig::default()
            },
            ..SimConfig::default()
        };
        let (mut host, board) = SimBoard::new(plant, config).spawn_memory();
        host.set_timeout(Duration::from_millis(5));
        let link = DeviceLink::new("sim", Box::new(host));
        let client = DeviceClient::connect(link, ClientConfig::default()).expect("handshake");
        (client, board)
    }

    fn request(
        spec: &PolicySpec,
        steps: Option<usize>,
        episodes: Option<u32>,
        mode: RunMode,
    ) -> CollectRequest {
        // A tiny linear policy: mean = 0.1·obs₀, log_std = ln 0.5.
        let mut params = vec![0.0f32; spec.param_count()];
        params[0] = 0.1;
        if let Some(last) = params.last_mut() {
            *last = 0.5f32.ln();
        }
        CollectRequest {
            version: 1,
            spec: spec.clone(),
            params: Arc::new(params),
            first_episode: 0,
            seed: 42,
            mode,
            steps,
            episodes,
            silence_timeout: Duration::from_secs(2),
            recovery: Recovery::default(),
        }
    }

    fn linear_spec(client: &DeviceClient) -> PolicySpec {
        PolicySpec::for_plant(&client.info().plant, &[], false)
    }

    #[test]
    fn step_quota_cuts_the_last_episode_with_a_bootstrap_observation() {
        let (mut client, _board) = pendulum_client();
        let spec = linear_spec(&client);
        let mut active = None;
        // Pendulum episodes are 200 steps: 450 steps = 2 whole episodes + 50 steps.
        let rollout = collect(
            &mut client,
            &mut active,
            &request(&spec, Some(450), None, RunMode::Explore),
        )
        .unwrap();
        assert_eq!(active, Some(1));
        assert_eq!(rollout.steps(), 450);
        let lengths: Vec<usize> = rollout.episodes.iter().map(CollectedEpisode::len).collect();
        assert_eq!(lengths, vec![200, 200, 50]);
        assert!(rollout.episodes[0].complete_return.is_some());
        assert_eq!(rollout.episodes[2].complete_return, None);
        assert!(
            matches!(rollout.episodes[2].trajectory.ending(), EpisodeEnding::Truncated { final_obs } if final_obs.len() == 3)
        );
        assert_eq!(rollout.rejections, RejectionCounts::default());
        // Episode ids are consecutive from the first one requested.
        let ids: Vec<u32> = rollout.episodes.iter().map(|e| e.episode).collect();
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[test]
    fn the_same_seed_gives_the_same_samples_and_log_probs_pass_the_cross_check() {
        let (mut a, _board_a) = pendulum_client();
        let (mut b, _board_b) = pendulum_client();
        let spec = linear_spec(&a);
        let req = request(&spec, Some(300), None, RunMode::Explore);
        let first = collect(&mut a, &mut None, &req).unwrap();
        let second = collect(&mut b, &mut None, &req).unwrap();
        assert_eq!(first.episodes, second.episodes);
        // The cross-check ran on every episode and accepted them all.
        assert_eq!(first.rejections.log_prob_mismatch, 0);
        assert!(
            first
                .episodes
                .iter()
                .all(|e| e.trajectory.records().iter().all(|r| r.log_prob < 0.0))
        );
    }

    #[test]
    fn evaluation_counts_episodes_and_reports_complete_returns() {
        let (mut client, _board) = pendulum_client();
        let spec = linear_spec(&client);
        let rollout = collect(
            &mut client,
            &mut None,
            &request(&spec, None, Some(3), RunMode::Deterministic),
        )
        .unwrap();
        assert_eq!(rollout.episodes.len(), 3);
        assert!(
            rollout
                .episodes
                .iter()
                .all(|e| e.len() == 200 && e.complete_return.is_some())
        );
        // Deterministic actions carry no log-probability.
        assert!(
            rollout.episodes.iter().all(|e| e
                .trajectory
                .records()
                .iter()
                .all(|r| r.log_prob == 0.0))
        );
    }
}
