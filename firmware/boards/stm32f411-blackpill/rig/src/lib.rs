//! The Black Pill board's logic that needs no hardware, tested on the host: the wiring
//! table ([`pins`]), the USB identity ([`usb_identity`]) and the CDC-ACM packet framing
//! ([`cdc_framing`]). The board image (`firmware/boards/stm32f411-blackpill`) uses them as is;
//! this crate is a member of the host workspace so `cargo test --workspace` runs its tests.
#![no_std]
#![deny(missing_docs)]

pub mod cdc_framing;
pub mod pins;
pub mod usb_identity;
