#!/usr/bin/env bash
# Packs this machine's build of ranktune for the GPU machine into .deps/prebuilt/ (git-ignored; name .deps in the
# device tool's `carry`), so that a short device lease runs instead of compiling: stripped copies of the ranktune
# binary, the benchmark binaries and the GPU test binaries, plus the one shared library the GPU image lacks
# (Boost.Program_options). bench/gpu_check.sh uses them when RANKTUNE_PREBUILT=.deps/prebuilt and they start there;
# otherwise it builds. Both machines are x86-64 with the same torch wheel, CUDA 13.0 and NCCL 2.28.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${RANKTUNE_BUILD_DIR:-build}
out=.deps/prebuilt
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
pack() { objcopy --strip-debug "$1" "$out/bin/$(basename "$1")"; }
pack "$build/bin/ranktune"
pack "$build/bench/ranktune_allreduce_bench"
for t in test_nccl_communicator test_grad_sync_gpu test_pipeline_gpu test_rng_checkpoint; do
  f=$(find "$build/tests" -name "$t" -type f -perm -u+x | head -1)
  [ -n "$f" ] && pack "$f"
done
boost=$(ldd "$build/bin/ranktune" | awk '/libboost_program_options/ {print $3}')
[ -n "$boost" ] && cp -L "$boost" "$out/lib/"
du -sh "$out"/*
