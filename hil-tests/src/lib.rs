//! End-to-end tests live in `tests/`; this library only hosts their shared fixtures:
//!
//! - [`scratch`]: per-test scratch folders, removed on drop;
//! - [`child`]: child processes that are killed and reaped when their guard drops;
//! - [`ser2net`]: a real ser2net serving a simulated device's pseudo-terminal over TCP;
//! - [`kill_switch`]: a board link that reports the device's traffic, so a test can kill a
//!   simulated device in the middle of a collection round;
//! - [`runs`]: small run configurations and a helper that trains one to the end;
//! - [`scripted_device`]: a scripted protocol peer (stuck, or sending arbitrary messages);
//! - [`faults`]: the fault-matrix harness (a wire tap compared with what the trainer accepted);
//! - [`qemu`]: QEMU devices (the board images `scripts/cross.sh` builds) with a client.

pub mod child;
pub mod faults;
pub mod hal_twin;
pub mod kill_switch;
pub mod qemu;
pub mod runs;
pub mod scratch;
pub mod scripted_device;
pub mod ser2net;
