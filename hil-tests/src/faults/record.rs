//! The device's own record of its transitions, and the check that every transition the host
//! accepted is bitwise one the device produced.

use std::collections::{HashMap, HashSet};

use tether_shared::DeviceMessage;
use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{EpisodeEndReason, RecordLayout, TransitionRecord};
use tether_trainer::rollout::CollectedEpisode;

/// Key of one transition: (policy version, episode id, step index).
pub type StepKey = (u32, u32, u32);

/// Every transition the device sent, decoded from a [`WireTap`](tether_firmware::sim::WireTap)
/// (bytes taken before fault injection). A key may hold several records: after a reconnect
/// the host collects a round again, and the device re-runs the same episode ids.
#[derive(Debug, Default)]
pub struct DeviceRecord {
    /// Records by key, each as the bit patterns of its f32 values.
    pub steps: HashMap<StepKey, Vec<Vec<u32>>>,
    /// Episodes the device ended naturally (terminated or truncated): (version, id).
    pub completed: HashSet<(u32, u32)>,
    /// Frames in the tap that did not decode (a frame cut short by a device reset).
    pub undecodable: u32,
}

impl DeviceRecord {
    /// Decodes the device's outgoing bytes, records laid out as `layout` (the plant's).
    /// A batch whose values are not valid records is counted as undecodable.
    pub fn from_wire(bytes: &[u8], layout: RecordLayout) -> Self {
        let mut record = DeviceRecord::default();
        let mut decoder = Box::new(FrameDecoder::<MAX_FRAME_LEN>::new());
        let mut input = bytes;
        while let Some(result) = decoder.decode_next::<DeviceMessage>(&mut input) {
            match result {
                Ok(DeviceMessage::Transitions(batch)) => {
                    let Ok(records) = batch.records(layout) else {
                        record.undecodable += 1;
                        continue;
                    };
                    for (i, step) in records.iter().enumerate() {
                        let key = (
                            batch.policy_version,
                            batch.episode,
                            batch.first_step + i as u32,
                        );
                        let bits = record_bits(&step);
                        let slot = record.steps.entry(key).or_default();
                        if !slot.contains(&bits) {
                            slot.push(bits);
                        }
                    }
                }
                Ok(DeviceMessage::EpisodeEnd(end)) => {
                    if matches!(
                        end.reason,
                        EpisodeEndReason::Terminated | EpisodeEndReason::Truncated
                    ) {
                        record.completed.insert((end.policy_version, end.episode));
                    }
                }
                Ok(_) => {}
                Err(_) => record.undecodable += 1,
            }
        }
        record
    }

    /// Checks every step of `accepted` against the record. Returns the number of steps
    /// checked, or a description of the first few that the device never produced.
    pub fn verify(&self, accepted: &[CollectedEpisode]) -> Result<usize, Vec<String>> {
        let mut checked = 0;
        let mut bad = Vec::new();
        for ep in accepted {
            for (step, transition) in ep.trajectory.records().iter().enumerate() {
                let bits = record_bits(&transition);
                let key = (ep.policy_version, ep.episode, ep.first_step + step as u32);
                let known = self.steps.get(&key).is_some_and(|r| r.contains(&bits));
                if known {
                    checked += 1;
                } else if bad.len() < 5 {
                    bad.push(format!(
                        "accepted transition {key:?} is not one the device produced"
                    ));
                }
            }
        }
        if bad.is_empty() {
            Ok(checked)
        } else {
            Err(bad)
        }
    }

    /// Episodes the device completed that the host neither accepted nor can have been
    /// waiting for: for each policy version, every completed episode with an id below the
    /// highest accepted one. The host must count each of them as discarded.
    pub fn lost_episodes(&self, accepted: &[CollectedEpisode]) -> usize {
        let mut highest: HashMap<u32, u32> = HashMap::new();
        let mut got: HashSet<(u32, u32)> = HashSet::new();
        for ep in accepted {
            got.insert((ep.policy_version, ep.episode));
            let h = highest.entry(ep.policy_version).or_insert(ep.episode);
            *h = (*h).max(ep.episode);
        }
        self.completed
            .iter()
            .filter(|key| !got.contains(key))
            .filter(|(v, e)| highest.get(v).is_some_and(|h| e < h))
            .count()
    }

    /// Transitions the device produced that a run with nothing lost would have used: for
    /// each policy version (one round, maybe collected more than once after a reconnect),
    /// every step up to the last step the host accepted, in episode then step order.
    pub fn produced_needed(&self, accepted: &[CollectedEpisode]) -> u64 {
        let mut last: HashMap<u32, (u32, u32)> = HashMap::new();
        for ep in accepted.iter().filter(|e| !e.is_empty()) {
            let end = (ep.episode, ep.first_step + ep.len() as u32 - 1);
            let slot = last.entry(ep.policy_version).or_insert(end);
            *slot = (*slot).max(end);
        }
        self.steps
            .keys()
            .filter(|(v, e, s)| last.get(v).is_some_and(|&top| (*e, *s) <= top))
            .count() as u64
    }

    /// Steps the host lost inside episodes it kept: produced, not accepted, and below a
    /// step of the same episode that was accepted (so a gap the link left, which the
    /// metrics must count as lost).
    pub fn lost_inside_kept(&self, accepted: &[CollectedEpisode]) -> u64 {
        let mut kept: HashMap<(u32, u32), (HashSet<u32>, u32)> = HashMap::new();
        for ep in accepted.iter().filter(|e| !e.is_empty()) {
            let slot = kept.entry((ep.policy_version, ep.episode)).or_default();
            for i in 0..ep.len() as u32 {
                slot.0.insert(ep.first_step + i);
            }
            slot.1 = slot.1.max(ep.first_step + ep.len() as u32 - 1);
        }
        self.steps
            .keys()
            .filter(|(v, e, s)| {
                kept.get(&(*v, *e))
                    .is_some_and(|(steps, top)| s < top && !steps.contains(s))
            })
            .count() as u64
    }
}

/// A record's values as bit patterns, in record order.
fn record_bits(record: &TransitionRecord<'_>) -> Vec<u32> {
    record
        .observation
        .iter()
        .chain(record.action)
        .chain([&record.reward, &record.log_prob])
        .map(|v| v.to_bits())
        .collect()
}
