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

if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
