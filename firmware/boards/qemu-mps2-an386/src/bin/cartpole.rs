//! The cartpole image: tether's device runtime with the `CartPole` model as a virtual plant.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use tether_firmware::plant::CartPole;

#[entry]
fn main() -> ! {
    tether_board_qemu_mps2_an386::start(CartPole::new())
}
