//! tether trainer: TRPO on the host, fed by trajectories streamed from devices.

pub mod run;
