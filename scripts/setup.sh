#!/usr/bin/env bash
# Installs the system packages tether's build and tests need, if they are missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
# plotters' text rendering links fontconfig/freetype through pkg-config.
pkg-config --exists fontconfig 2>/dev/null || need+=(libfontconfig1-dev pkg-config)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# hil-tests/tests/tcp.rs serves a simulated device's pty over TCP with a real ser2net (4.x),
# as a remote rig would be; socat is the fallback tool named in its documentation.
command -v ser2net >/dev/null 2>&1 || need+=(ser2net)
command -v socat >/dev/null 2>&1 || need+=(socat)

# scripts/cross.sh (run by scripts/test.sh) builds the firmware's board images with Debian's
# Rust (rustc-web, cargo-web, and rust-web-src to build `core`), lld-22 and binutils'
# arm-none-eabi-size; the QEMU tests and `--link qemu` run them in qemu-system-arm (7.2).
# Without recommends: QEMU's would pull in a desktop's worth of packages.
cross=()
[ -x /usr/bin/rustc ] || cross+=(rustc-web)
[ -x /usr/bin/cargo ] || cross+=(cargo-web)
[ -d /usr/lib/rustlib/src/rust/library/core ] || cross+=(rust-web-src)
[ -x /usr/lib/llvm-22/bin/ld.lld ] || cross+=(lld-22)
command -v arm-none-eabi-size >/dev/null 2>&1 || cross+=(binutils-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || cross+=(qemu-system-arm)

if ((${#need[@]} + ${#cross[@]})); then
    echo "setup: installing ${need[*]} ${cross[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    install=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq)
    if ((${#need[@]})); then
        "${install[@]}" "${need[@]}" >/dev/null
    fi
    if ((${#cross[@]})); then
        "${install[@]}" --no-install-recommends "${cross[@]}" >/dev/null
    fi
fi
