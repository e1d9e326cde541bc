//! tether firmware: the device runtime that runs the policy at the plant's control rate.
//!
//! The core (everything but [`sim`]) is `#![no_std]` and allocation-free. A board provides
//! three seams and calls [`Device::poll`] from its main loop:
//!
//! - a byte link through the `embedded-io` traits `Read + ReadReady + Write + WriteReady`
//!   (used without ever blocking);
//! - a monotonic microsecond [`Clock`];
//! - a [`Plant`](plant::Plant): the sensors and actuators, or a model of them.
//!
//! Modules, one concept each: [`device`] (the state machine), [`link`] (framing endpoint and
//! outgoing queue), [`policy_store`] (double-buffered parameters), [`policy_tiles`] (their device-side
//! layout and the forward pass over it), [`sampler`] (PRNG and
//! action sampling), [`gsde`] (state-dependent exploration: the held noise matrix),
//! [`safety`] (clamping, finiteness, watchdog), [`rate_limit`] (the action rate limit),
//! [`clock`], [`plant`],
//! [`trig`] (single-precision sine and cosine), and
//! with the `sim` feature the host-side simulated board [`sim`].
//!
//! Logging goes through the crate-private `fmt` macros: `defmt` with the `defmt` feature,
//! `log` with the `log` feature, nothing otherwise.
#![cfg_attr(not(feature = "sim"), no_std)]
#![deny(missing_docs)]

#[macro_use]
mod fmt;

pub mod clock;
pub mod deploy;
pub mod device;
pub mod gsde;
pub mod link;
pub mod plant;
pub mod policy_store;
pub mod policy_tiles;
pub mod rate_limit;
pub mod received_ranges;
pub mod retransmit;
pub mod safety;
pub mod sampler;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(test)]
mod testkit;
pub mod trig;

pub use clock::Clock;
pub use device::{Device, DeviceConfig, DeviceStats, FIRMWARE_VERSION};
