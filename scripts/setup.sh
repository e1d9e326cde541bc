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
# The export tests compile the generated C header with cc (and as C++ with c++).
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# TensorBoard's own reader checks tether's event files (below); it needs Python's venv.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# Cortex-M board images (scripts/cross.sh) and their tests and budgets in QEMU: Debian's Rust
# toolchain with the standard library's sources (it builds `core` for the target offline,
# where rustup cannot add one), lld to link, binutils for sizes and symbols, QEMU 7.2 for the
# mps2-an386 machine (it replaces a backported qemu-utils, which nothing here uses).
for pkg in rustc-web cargo-web rust-web-src lld-22 binutils-arm-none-eabi qemu-system-arm; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        need+=("$pkg")
done

if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # `env` keeps DEBIAN_FRONTEND through sudo, which drops the caller's environment.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi

# TensorBoard from PyPI in a project-local virtual environment (.venv/, git-ignored):
# trainer/tests/tensorboard_reader.rs reads a run's event files with its EventAccumulator.
TENSORBOARD_VERSION=2.21.0
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if ! "$VENV/bin/python" -c "import tensorboard, sys; sys.exit(tensorboard.__version__ != '$TENSORBOARD_VERSION')" 2>/dev/null; then
    echo "setup: installing tensorboard $TENSORBOARD_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "tensorboard==$TENSORBOARD_VERSION"
fi
