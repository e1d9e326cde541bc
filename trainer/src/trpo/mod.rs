//! TRPO learning core (Schulman et al. 2015): gradient → conjugate gradient on exact
//! Fisher-vector products → line search under a KL bound → value-function fit.

pub mod batch;
pub mod conjugate_gradient;
pub mod device_format;
pub mod distribution;
pub mod fisher;
pub mod gae;
pub mod hyperparams;
pub mod kernels;
pub mod learner_state;
pub mod line_search;
pub mod mlp;
pub mod normalizer;
pub mod policy;
pub mod surrogate;
pub mod update;
pub mod value;

pub use learner_state::{AdamState, NormalizerState, StateError, TrpoState};
pub use update::{Trpo, UpdateError, UpdateReport, UpdateTimings};
