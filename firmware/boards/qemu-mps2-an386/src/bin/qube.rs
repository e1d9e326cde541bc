//! The qube image: tether's device runtime with the `Qube` model as a virtual plant.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use tether_firmware::plant::Qube;

#[entry]
fn main() -> ! {
    tether_board_qemu_mps2_an386::start(Qube::new())
}
