//! Wire protocol and policy layout shared by the tether firmware and trainer.
//!
//! Everything here is `no_std` and allocation-free so that the very same definitions run on
//! the microcontroller and on the host:
//!
//! - [`message`]: the messages both sides exchange, as plain serde types with bounded
//!   (heapless) strings and vectors;
//! - [`frame`]: how a message becomes bytes on the link (postcard, CRC-32, COBS, `0x00`
//!   terminator) and the streaming [`frame::FrameDecoder`] that turns bytes back into messages;
//! - [`policy`]: the [`policy::PolicySpec`], its flat parameter layout and the f32 forward
//!   pass — the single definition of what runs on the device;
//! - [`plant`]: how a device describes the plant it controls;
//! - [`seeds`]: the SplitMix64 mix and every derivation of a random stream from the run seed;
//! - [`version`]: the protocol version and the compatibility check.
#![no_std]
#![deny(missing_docs)]

pub mod frame;
pub mod message;
pub mod plant;
pub mod policy;
pub mod seeds;
pub mod version;

pub use message::{DeviceMessage, HostMessage};
pub use plant::{ActionSpace, PlantDescription, PlantError};
pub use policy::{PolicyHead, PolicySpec};
pub use version::PROTOCOL_VERSION;
