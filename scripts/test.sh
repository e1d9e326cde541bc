#!/usr/bin/env bash
# The project's test command: installs what the tests need, builds the Cortex-M board images
# (the QEMU tests run them; a missing image fails them, never skips them), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/cross.sh
cargo test --workspace "$@"
