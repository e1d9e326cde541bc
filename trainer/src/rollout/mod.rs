//! Rollout collection: one worker thread per device, each turning the device's stream of
//! transition batches into checked episodes; the learner assembles them in a fixed order.
//!
//! - [`episode`]: the episodes a device delivers, and the hygiene rules that admit a sample;
//! - [`gap`]: an episode's steps as they arrive, and its cut at gaps the link left;
//! - [`resend`]: asking the device again for what the link lost;
//! - [`crosscheck`]: the host's recomputation of the device's log-probabilities, with
//!   [`batched_forward`], the shared forward pass over blocks of observations;
//! - [`collect`]: one collection round on one device (upload, run, receive, stop);
//! - [`pool`]: the worker threads and deterministic batch assembly.

pub mod batched_forward;
pub mod collect;
pub mod crosscheck;
pub mod episode;
pub mod gap;
pub mod pool;
pub mod resend;

pub use collect::{CollectRequest, DeviceRollout, Recovery, RejectionCounts};
pub use episode::CollectedEpisode;
pub use pool::DevicePool;
