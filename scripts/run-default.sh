#!/usr/bin/env bash
# Set up, build, and run the embedded default job (configs/tiny.ini): on the GPU when one is visible, else on CPU.
# Extra arguments are passed to ranktune (e.g. --train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
# The configuration scripts/test.sh uses (tests ON: one build directory for both, no reconfigure between them), but
# only the ranktune target is built.
bash scripts/build.sh --target ranktune -DRANKTUNE_BUILD_TESTS=ON
build=${RANKTUNE_BUILD_DIR:-build}
device=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda; fi
# Run again, the job continues from its newest checkpoint (a fresh start into the same checkpoint directory is
# refused: pass --resume=overwrite for that).
resume=(--resume=auto)
for a in "$@"; do case $a in --resume=* | --resume) resume=() ;; esac; done
exec "$build/bin/ranktune" train --config configs/tiny.ini --device="$device" "${resume[@]}" "$@"
