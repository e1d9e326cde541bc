//! tether on the WeAct "Black Pill" (STM32F411CEU6): a rotary pendulum rig over USB.
//!
//! The board supplies the runtime's three seams on embassy — the byte link
//! ([`usb_link::UsbLink`], USB CDC-ACM bridged to blocking `embedded-io` through two bounded
//! pipes), the clock ([`clock::EmbassyClock`], embassy-time on TIM2) and the plant (the
//! firmware core's `RotaryPendulum` over TIM1 PWM, TIM3/TIM4 encoders ([`encoder`]) or an
//! AS5600, GPIO direction, enable and limit switch) — and the tasks around `Device::poll`
//! (`src/bin/rotary.rs`). Pins, USB identity and packet framing are in the host-tested
//! `tether-blackpill-rig` crate.
#![no_std]

pub mod clock;
pub mod encoder;
pub mod usb_link;

/// Policy capacity per buffer, in f32 values: a [64, 64] policy with observation normaliser
/// for the 6-observation rotary pendulum fits, with a gSDE head too (4,686 values; 4,749
/// with gSDE's 64 log-stds in place of one). The gSDE noise matrices get the firmware's
/// default room (four actions).
pub const POLICY_CAPACITY: usize = 4_752;

/// Bytes each of the USB link's pipes holds: one largest frame (1 KiB) plus room, so a
/// whole transition batch can wait while USB drains the previous one.
pub const PIPE_BYTES: usize = 2048;
