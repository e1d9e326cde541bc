//! Host-side device drivers: reaching a device over any byte stream and speaking the tether
//! protocol with it.
//!
//! - [`address`]: where a device is (`/dev/ttyACM0`, `tcp://rig:4000`, a simulated board);
//! - [`transport`]: opening that address as a byte stream, with errors a user can act on;
//! - [`link`]: frames on the byte stream (encode, decode, link-health counters);
//! - [`client`]: the conversation: handshake, commands, run, stop, heartbeats;
//! - [`upload`]: a policy upload by selective repeat over chunks;
//! - [`rtt`]: the round-trip estimate and the retransmission timeout it gives;
//! - [`frame_sizing`]: the frame size a damaging line calls for;
//! - [`replug`]: reopening a port that vanished, by path or USB serial number;
//! - [`simulated`]: a simulated device (the firmware with a plant model) set up to run, in
//!   this process or, through [`qemu`], as the Cortex-M board image in QEMU.

pub mod address;
pub mod client;
pub mod error;
pub mod frame_sizing;
pub mod link;
pub mod qemu;
pub mod replug;
pub mod rtt;
pub mod simulated;
pub mod transport;
pub mod upload;

pub use address::DeviceAddress;
pub use client::{ClientConfig, DeviceClient};
pub use error::DeviceError;
pub use link::DeviceLink;
pub use transport::ByteStream;
