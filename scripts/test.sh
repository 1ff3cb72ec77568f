#!/usr/bin/env bash
# Set up, build and run every test (unit, MPI at 1/2/4 ranks, integration, Slurm/modules; GPU tests skip without
# a GPU). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DRANKTUNE_BUILD_TESTS=ON
build=${RANKTUNE_BUILD_DIR:-build}
ctest --test-dir "$build" --output-on-failure -j "${RANKTUNE_TEST_JOBS:-2}" "$@"
