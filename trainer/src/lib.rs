//! tether trainer: TRPO on the host, fed by trajectories streamed from devices.

pub mod device;
pub mod rollout;
pub mod run;
pub mod trpo;
