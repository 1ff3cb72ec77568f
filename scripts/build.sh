#!/usr/bin/env bash
# Set up (scripts/setup.sh) and build ranktune into build/ (or $RANKTUNE_BUILD_DIR) with Ninja and ccache.
# Extra arguments go to CMake's configure step, e.g. -DRANKTUNE_BUILD_TESTS=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${RANKTUNE_BUILD_DIR:-build}
jobs=${RANKTUNE_JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja "$@"
cmake --build "$build" -j "$jobs"
