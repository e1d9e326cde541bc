//! Builds `image/` (a `#![no_std] #![no_main]` binary) in its own cargo workspace with
//! `panic = "abort"`, and fails this build if that fails. See `src/lib.rs`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));
    let image = manifest_dir.join("image");
    let firmware = manifest_dir.join("..");
    for watched in [
        image.join("Cargo.toml"),
        image.join("src"),
        image.join("build.rs"),
        firmware.join("Cargo.toml"),
        firmware.join("src"),
        firmware.join("../shared/Cargo.toml"),
        firmware.join("../shared/src"),
        firmware.join("../Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    let target_dir = out_dir.join("image-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(image.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // A plain build: none of the outer build's wrappers, flags or target-dir overrides.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    // Reuse the outer lock file so the image resolves the same dependency versions.
    let lock = firmware.join("../Cargo.lock");
    if lock.exists() {
        let _ = std::fs::copy(&lock, image.join("Cargo.lock"));
    }
    let output = command
        .output()
        .expect("could not run cargo for the freestanding image");
    if !output.status.success() {
        panic!(
            "the freestanding no_std image failed to build — did std sneak into the firmware core or a plant?\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let artifact = target_dir.join("release").join("tether-freestanding-image");
    let bytes = std::fs::metadata(&artifact).map(|m| m.len()).unwrap_or(0);
    println!(
        "cargo:rustc-env=TETHER_FREESTANDING_IMAGE={}",
        artifact.display()
    );
    println!("cargo:rustc-env=TETHER_FREESTANDING_IMAGE_BYTES={bytes}");
}
