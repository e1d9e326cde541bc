#!/usr/bin/env bash
# The project's test command: installs what the tests need, builds the firmware's board
# images (the QEMU tests run them; without an image they fail, never skip), then runs every
# test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/cross.sh
cargo test --workspace "$@"
