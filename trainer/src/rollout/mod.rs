//! Rollout collection: one worker thread per device, each turning the device's stream of
//! transition batches into checked episodes; the learner assembles them in a fixed order.
//!
//! - [`episode`]: the episodes a device delivers, and the hygiene rules that admit a sample;
//! - [`crosscheck`]: the host's recomputation of the device's log-probabilities;
//! - [`collect`]: one collection round on one device (upload, run, receive, stop);
//! - [`pool`]: the worker threads and deterministic batch assembly.

pub mod collect;
pub mod crosscheck;
pub mod episode;
pub mod pool;

pub use collect::{CollectRequest, DeviceRollout, RejectionCounts};
pub use episode::CollectedEpisode;
pub use pool::DevicePool;
