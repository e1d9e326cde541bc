//! The learn loop: devices collect, the learner updates, the run folder records.
//!
//! - [`fleet`]: connecting the run's devices (simulated boards, serial ports, TCP rigs);
//! - [`link_budget`]: whether a serial link can carry a plant's transition stream;
//! - [`assembly`]: turning what the devices delivered into the learner's batch;
//! - [`preset`]: the table of per-plant starting settings;
//! - [`round_stats`]: episode lengths and device timing of a round, for the metrics;
//! - [`smoothness`]: how smoothly a round drove the plants (action changes, high-frequency
//!   share), for the metrics;
//! - [`run_state`]: what a checkpoint holds;
//! - [`session`]: the iteration loop itself (`tether train` / `tether resume`);
//! - [`warm_start`]: a new run's learner from a trained run or policy (`--init`);
//! - [`evaluation`]: deterministic evaluation episodes (`tether eval`);
//! - [`best_candidates`]: `best_policy.bin` as the mean of the best-evaluated policies.

pub mod assembly;
pub mod best_candidates;
pub mod evaluation;
pub mod fleet;
pub mod link_budget;
pub mod preset;
pub mod round_stats;
pub mod run_state;
pub mod session;
pub mod smoothness;
pub mod warm_start;

pub use fleet::{Fleet, FleetSpec};
pub use session::{Session, SessionOutcome};
