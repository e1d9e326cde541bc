//! Freestanding proof: the firmware core and the plant models build and link with no `std`.
//!
//! # How it works
//!
//! The real artifact is the `#![no_std] #![no_main]` binary in `image/` (next to this
//! crate): it has its own `#[panic_handler]`, an `_start` entry and no C start files, and it
//! instantiates a [`Device`](../tether_firmware/device/struct.Device.html) over every plant
//! model with a dummy link and clock and polls it, so the runtime, the forward pass, the
//! sampler and the plants are all linked in. If any crate in its graph brings `std` in, the
//! build fails: `std` defines the `panic_impl` lang item a second time (and needs an
//! allocator, an unwinder and a start routine the image does not provide).
//!
//! This crate's build script builds that image with a nested `cargo build --release` in its
//! own target directory (`$OUT_DIR/image-target`), so the proof runs inside every ordinary
//! `cargo build`, `cargo test` and `cargo clippy` of the workspace, and a failure fails them.
//!
//! # Why a nested build
//!
//! A `no_std` binary must use `panic = "abort"`: with the default `unwind` strategy rustc
//! refuses it ("unwinding panics are not supported without std"). The panic strategy is a
//! profile setting of the *workspace root*, and `cargo test` builds with `unwind` anyway, so
//! a workspace member cannot be that binary. The image is therefore its own one-package
//! workspace (`image/Cargo.toml` has an empty `[workspace]` table) with `panic = "abort"` in
//! both profiles. The precompiled `core` still references `rust_eh_personality`; the image
//! defines it as an empty function that can never run (nothing unwinds under `abort`).
//! The host's C library is linked only for `memcpy`/`memset`-style symbols the compiler
//! emits; no C start files (`-nostartfiles`) and no Rust `std` are involved.
//!
//! [`IMAGE_PATH`] is where the linked image ended up; [`IMAGE_BYTES`] its file size.
#![no_std]

/// Path of the linked freestanding image built by this crate's build script.
pub const IMAGE_PATH: &str = env!("TETHER_FREESTANDING_IMAGE");

/// Size of the image file in bytes (debug info stripped by the release profile).
pub const IMAGE_BYTES: &str = env!("TETHER_FREESTANDING_IMAGE_BYTES");
