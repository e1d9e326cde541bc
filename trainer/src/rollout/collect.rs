//! One collection round on one device: upload the policy if needed, run, receive until the
//! step quota (or episode count) is met, stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_shared::message::{
    DeviceState, EpisodeEnd, RecordLayout, RunCommand, RunMode, TransitionBatch,
};
use tether_shared::{DeviceMessage, PolicySpec};

use super::crosscheck::log_probs_agree;
use super::episode::{CollectedEpisode, EpisodeAssembler, Fed, Rejection};
use crate::device::{DeviceClient, DeviceError};

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
}

/// Counts of samples refused during a round, by rule.
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
    /// Not serialized (like `reconnects`): the checkpoint's postcard layout of these counts
    /// stays that of format version 1; `metrics.jsonl` keeps both per iteration.
    #[serde(skip)]
    pub interrupted: u64,
    /// Times the device was re-handshaken (and the round restarted) after a failure.
    #[serde(skip)]
    pub reconnects: u64,
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
    }
}

/// What one device delivered in a round.
#[derive(Clone, Debug, Default)]
pub struct DeviceRollout {
    /// Accepted episodes in the order the device ran them.
    pub episodes: Vec<CollectedEpisode>,
    /// What was refused.
    pub rejections: RejectionCounts,
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

/// Most episodes counted as lost for one jump in episode ids (ids are CRC-protected, so a
/// jump is real; the bound only keeps a pathological device from stalling the count loop).
const MAX_COUNTED_GAP: u32 = 1 << 16;

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
        current: None,
        discarded_in_a_row: 0,
        output,
        uploaded: (request.mode == RunMode::Explore).then_some(UploadedPolicy {
            spec: &request.spec,
            params: &request.params,
        }),
    };
    round.current = Some(round.assembler(request.first_episode));

    if let Err(e) = receive(client, &mut round, request) {
        round.interrupt();
        return Err(e);
    }
    // A round that ended by episode count has left the device idle already; stop anyway so
    // the plant is safe and stale frames are drained before the next round.
    client.stop()?;
    Ok(())
}

/// Receives until the round is done.
fn receive(
    client: &mut DeviceClient,
    round: &mut Round<'_>,
    request: &CollectRequest,
) -> Result<(), DeviceError> {
    let mut last_heard = Instant::now();
    while !round.done() {
        match client.next_message(request.silence_timeout)? {
            Some(DeviceMessage::Transitions(batch)) => {
                last_heard = Instant::now();
                round.on_batch(&batch);
            }
            Some(DeviceMessage::EpisodeEnd(end)) => {
                last_heard = Instant::now();
                round.on_end(&end);
            }
            Some(DeviceMessage::Heartbeat(beat)) if beat.state != DeviceState::Running => {
                // The device left the run (it reset, or faulted into its safe state): it
                // sends nothing more until it is told again, so waiting is pointless.
                return Err(DeviceError::NotRunning {
                    device: client.name().to_string(),
                    state: beat.state,
                });
            }
            Some(_) => last_heard = Instant::now(),
            None => {
                if last_heard.elapsed() >= request.silence_timeout {
                    return Err(DeviceError::Silent {
                        device: client.name().to_string(),
                        waited: request.silence_timeout,
                    });
                }
            }
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
    current: Option<EpisodeAssembler>,
    /// Episodes discarded since the last accepted one.
    discarded_in_a_row: u32,
    output: &'a mut DeviceRollout,
    /// Policy to cross-check the device's log-probabilities against (exploring rounds only:
    /// deterministic actions carry no log-probability).
    uploaded: Option<UploadedPolicy<'a>>,
}

impl Round<'_> {
    fn assembler(&self, episode: u32) -> EpisodeAssembler {
        EpisodeAssembler::new(self.layout, self.version, episode)
    }

    fn done(&self) -> bool {
        self.kept >= self.quota
            || self
                .episodes_wanted
                .is_some_and(|n| self.episodes_ended >= n)
    }

    fn on_batch(&mut self, batch: &TransitionBatch) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if batch.episode < current.episode() {
            return; // a straggler from an episode already closed
        }
        if batch.episode > current.episode() {
            // The end of the current episode (and maybe whole episodes) went missing: each
            // one is counted.
            let lost = batch.episode - current.episode();
            for _ in 0..lost.min(MAX_COUNTED_GAP) {
                self.reject(Rejection::Inconsistent);
            }
            self.current = Some(self.assembler(batch.episode));
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if let Fed::Spoiled(_) = current.feed(batch, usize::MAX) {
            return;
        }
        // Past the quota: the record at index `room` supplies the bootstrap observation.
        let room = self.quota - self.kept;
        if current.spoiled().is_none()
            && current.len() > room
            && let Some(assembler) = self.current.take()
        {
            let episode = assembler.episode();
            match assembler.cut(room) {
                Ok(cut) => self.accept(cut),
                Err(rejection) => self.reject(rejection),
            }
            self.current = Some(self.assembler(episode + 1));
        }
    }

    fn on_end(&mut self, end: &EpisodeEnd) {
        let Some(current) = self.current.take() else {
            return;
        };
        if end.episode < current.episode() {
            self.current = Some(current);
            return;
        }
        if end.episode > current.episode() {
            // Nothing of this episode arrived, nor the ends of those before it back to the
            // current one: all of them are lost.
            let lost = (end.episode - current.episode()).saturating_add(1);
            self.episodes_ended = self.episodes_ended.saturating_add(lost);
            for _ in 0..lost.min(MAX_COUNTED_GAP) {
                self.reject(Rejection::Inconsistent);
            }
        } else {
            self.episodes_ended += 1;
            match current.finish(end) {
                Ok(episode) => self.accept(episode),
                Err(rejection) => self.reject(rejection),
            }
        }
        self.current = Some(self.assembler(end.episode + 1));
    }

    /// The round failed: the episode in progress (if anything of it arrived) is lost.
    fn interrupt(&mut self) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| !c.is_empty() || c.spoiled().is_some())
        {
            self.output.rejections.discarded_episodes += 1;
            self.output.rejections.interrupted += 1;
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
