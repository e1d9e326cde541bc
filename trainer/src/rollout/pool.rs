//! One worker thread per device; rounds run on every live device at once and come back in
//! device order, so a run with a fixed seed assembles the same batch every time.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::collect::{CollectRequest, DeviceRollout, RejectionCounts, collect_into};
use crate::device::{DeviceClient, DeviceError};
use tether_shared::message::DeviceInfo;

type Reply = Result<DeviceRollout, DeviceError>;

/// Re-handshakes a worker attempts within one round after a recoverable failure (device
/// reset, silence, disconnect) before the device is dropped.
pub const MAX_RECONNECTS_PER_ROUND: u32 = 2;

struct Worker {
    name: String,
    info: DeviceInfo,
    requests: Option<Sender<CollectRequest>>,
    replies: Receiver<(Reply, RejectionCounts)>,
    thread: Option<JoinHandle<()>>,
    /// Why the device was dropped, once it was.
    lost: Option<String>,
}

/// A device's part of a round, in device order.
pub struct RoundResult {
    /// Index of the device in the pool.
    pub device: usize,
    /// The device's name.
    pub name: String,
    /// What it delivered, or why it was dropped.
    pub outcome: Reply,
    /// When `outcome` is an error: what the failed attempts of the round lost (frames,
    /// interrupted episodes, reconnects), so the run's metrics still account for it. Zero
    /// on success (the rollout's own counts include everything).
    pub lost: RejectionCounts,
}

/// The set of devices a run trains on.
pub struct DevicePool {
    workers: Vec<Worker>,
}

impl DevicePool {
    /// Starts one worker thread per connected device.
    pub fn new(clients: Vec<DeviceClient>) -> Self {
        let workers = clients.into_iter().map(spawn_worker).collect();
        DevicePool { workers }
    }

    /// Number of devices still in the run.
    pub fn live(&self) -> usize {
        self.workers.iter().filter(|w| w.lost.is_none()).count()
    }

    /// Total devices, live or lost.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the pool has no device at all.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The handshake information of device `index`.
    pub fn info(&self, index: usize) -> Option<&DeviceInfo> {
        self.workers.get(index).map(|w| &w.info)
    }

    /// Names of the devices dropped so far, with the reason.
    pub fn lost(&self) -> Vec<(String, String)> {
        self.workers
            .iter()
            .filter_map(|w| w.lost.clone().map(|why| (w.name.clone(), why)))
            .collect()
    }

    /// Runs one round on every live device: `request(device_index, live_rank)` builds each
    /// device's request. Returns the results in device order; a device whose round failed
    /// is dropped from the pool (its error is in its result).
    pub fn round(
        &mut self,
        mut request: impl FnMut(usize, usize) -> CollectRequest,
    ) -> Vec<RoundResult> {
        let mut asked = Vec::new();
        let mut rank = 0;
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if worker.lost.is_some() {
                continue;
            }
            let sent = worker
                .requests
                .as_ref()
                .is_some_and(|tx| tx.send(request(index, rank)).is_ok());
            rank += 1;
            if sent {
                asked.push(index);
            } else {
                worker.lost = Some("worker thread ended".to_string());
            }
        }
        let mut results = Vec::new();
        for index in asked {
            let worker = &mut self.workers[index];
            let (outcome, lost) = worker.replies.recv().unwrap_or_else(|_| {
                (
                    Err(DeviceError::Disconnected {
                        device: worker.name.clone(),
                    }),
                    RejectionCounts::default(),
                )
            });
            if let Err(e) = &outcome {
                tracing::warn!(device = %worker.name, "dropping device: {e}");
                worker.lost = Some(e.to_string());
                worker.requests = None;
            }
            results.push(RoundResult {
                device: index,
                name: worker.name.clone(),
                outcome,
                lost,
            });
        }
        results
    }
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing the channel ends the worker loop, which stops its device.
            worker.requests = None;
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn spawn_worker(mut client: DeviceClient) -> Worker {
    let name = client.name().to_string();
    let info = client.info().clone();
    let (request_tx, request_rx) = mpsc::channel::<CollectRequest>();
    let (reply_tx, reply_rx) = mpsc::channel::<(Reply, RejectionCounts)>();
    let thread = std::thread::Builder::new()
        .name(format!("rollout {name}"))
        .spawn(move || {
            let mut active_version = None;
            for request in request_rx {
                let reply = collect_with_reconnects(&mut client, &mut active_version, &request);
                let failed = reply.0.is_err();
                if reply_tx.send(reply).is_err() || failed {
                    break;
                }
            }
            // Leave the plant safe whatever happened; the device may already be gone.
            let _ = client.stop();
        })
        .ok();
    Worker {
        name,
        info,
        requests: Some(request_tx),
        replies: reply_rx,
        thread,
        lost: None,
    }
}

/// One round on one device; after a failure a new handshake may cure (see
/// [`DeviceError::may_recover_by_reconnecting`]) the device is reconnected and the round
/// collected again from its start, up to [`MAX_RECONNECTS_PER_ROUND`] times. What the failed
/// attempts had gathered is discarded and counted (`interrupted`, `reconnects`,
/// `rejected_frames`): in the rollout on success, in the second value on failure.
fn collect_with_reconnects(
    client: &mut DeviceClient,
    active_version: &mut Option<u32>,
    request: &CollectRequest,
) -> (Reply, RejectionCounts) {
    let mut lost = RejectionCounts::default();
    let mut reconnects = 0;
    loop {
        let mut attempt = DeviceRollout::default();
        let error = match collect_into(client, active_version, request, &mut attempt) {
            Ok(()) => {
                attempt.rejections.add(&lost);
                return (Ok(attempt), RejectionCounts::default());
            }
            Err(e) => e,
        };
        // Everything the attempt accepted is thrown away (the episode it was in the middle
        // of is already counted by the attempt).
        let thrown = attempt.episodes.len() as u64;
        attempt.rejections.interrupted += thrown;
        attempt.rejections.discarded_episodes += thrown;
        lost.add(&attempt.rejections);
        if !error.may_recover_by_reconnecting() || reconnects >= MAX_RECONNECTS_PER_ROUND {
            return (Err(error), lost);
        }
        reconnects += 1;
        lost.reconnects += 1;
        tracing::warn!(
            device = %client.name(),
            "{error}; reconnecting ({reconnects} of {MAX_RECONNECTS_PER_ROUND})"
        );
        *active_version = None;
        if let Err(e) = client.reconnect() {
            return (Err(e), lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tether_shared::message::RunMode;

    use super::*;
    use crate::device::simulated::test_device::{self, TestDevice};
    use crate::rollout::Recovery;

    /// `n` pendulum devices and the pool over them; the boards stay with the caller.
    fn pool(n: usize) -> (DevicePool, Vec<tether_firmware::sim::SimHandle>) {
        let devices: Vec<TestDevice> = (0..n).map(|_| test_device::connect("pendulum")).collect();
        let (clients, boards) = devices.into_iter().map(|d| (d.client, d.board)).unzip();
        (DevicePool::new(clients), boards)
    }

    /// A training request for `steps` steps.
    fn request(pool: &DevicePool, steps: usize) -> CollectRequest {
        let plant = &pool.info(0).expect("a device").plant;
        let (spec, params) = test_device::policy(plant);
        CollectRequest {
            version: 1,
            spec,
            params: Arc::new(params),
            first_episode: 0,
            seed: 3,
            mode: RunMode::Explore,
            steps: Some(steps),
            episodes: None,
            silence_timeout: Duration::from_millis(500),
            recovery: Recovery::default(),
        }
    }

    #[test]
    fn a_round_returns_every_devices_share_in_device_order() {
        let (mut pool, _boards) = pool(3);
        assert_eq!((pool.len(), pool.live(), pool.is_empty()), (3, 3, false));
        let base = request(&pool, 0);
        let mut asked = Vec::new();
        let results = pool.round(|device, rank| {
            asked.push((device, rank));
            CollectRequest {
                steps: Some(100 + 10 * device),
                seed: device as u64,
                ..base.clone()
            }
        });
        assert_eq!(asked, [(0, 0), (1, 1), (2, 2)]);
        let order: Vec<usize> = results.iter().map(|r| r.device).collect();
        assert_eq!(order, [0, 1, 2]);
        for r in &results {
            let rollout = r.outcome.as_ref().expect("collected");
            assert_eq!(rollout.steps(), 100 + 10 * r.device, "cut at the quota");
            assert_eq!(r.name, "pendulum");
            assert_eq!(r.lost, RejectionCounts::default());
        }
        assert!(pool.lost().is_empty());
    }

    /// A device whose round fails (its board is gone) is dropped after the reconnects a
    /// round allows, named with the reason, and left out of later rounds; the live devices'
    /// ranks stay contiguous.
    #[test]
    fn a_device_that_fails_is_dropped_named_and_skipped() {
        let (mut pool, mut boards) = pool(3);
        boards.remove(1).stop();
        let base = request(&pool, 50);
        let results = pool.round(|_, _| base.clone());
        assert_eq!(results.len(), 3);
        assert!(results[0].outcome.is_ok() && results[2].outcome.is_ok());
        let failed = &results[1];
        assert!(failed.outcome.is_err());
        assert!(failed.lost.reconnects >= 1, "{:?}", failed.lost);
        assert_eq!(pool.live(), 2);
        let lost = pool.lost();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, "pendulum");

        let mut asked = Vec::new();
        let results = pool.round(|device, rank| {
            asked.push((device, rank));
            base.clone()
        });
        assert_eq!(asked, [(0, 0), (2, 1)]);
        assert!(results.iter().all(|r| r.outcome.is_ok()));
        assert_eq!(
            pool.len(),
            3,
            "a lost device still counts in the pool's size"
        );
    }
}
