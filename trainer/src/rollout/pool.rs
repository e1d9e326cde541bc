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
