//! tether trainer: TRPO on the host, fed by trajectories streamed from devices.

pub mod cli;
pub mod device;
pub mod interop;
pub mod rollout;
pub mod run;
pub mod training;
pub mod trpo;
