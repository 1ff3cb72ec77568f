#!/usr/bin/env bash
# Packs this machine's build of ranktune for the GPU machine into .deps/prebuilt/ and .deps/prebuilt.tar.xz
# (git-ignored: the archive travels to the GPU machine with the checkout), so that a short GPU lease runs instead of
# compiling: stripped copies of the ranktune binaries (the launcher bin/ranktune and the program bin/ranktune-main it
# execs from its own directory), the benchmark binaries and the GPU test binaries, plus the one shared library the GPU
# image lacks (Boost.Program_options). bench/gpu_check.sh uses them when RANKTUNE_PREBUILT=.deps/prebuilt and they
# start there; otherwise it builds. RANKTUNE_BUILD_DIR may name another worktree's build. Both machines are x86-64 with the same
# torch wheel, CUDA 13.0 and NCCL 2.28.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${RANKTUNE_BUILD_DIR:-build}
out=.deps/prebuilt
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
pack() { objcopy --strip-debug "$1" "$out/bin/$(basename "$1")"; }
pack "$build/bin/ranktune"
pack "$build/bin/ranktune-main"
pack "$build/bench/ranktune_allreduce_bench"
pack "$build/bench/ranktune_nf4_dequant_bench"
pack "$build/bench/ranktune_adamw_bench"
pack "$build/bench/ranktune_fp8_gemm_bench"
pack "$build/bench/ranktune_checkpoint_write_bench"
# test_qlora and test_bnb_checkpoint: their GPU parity cases, run by bench/qlora_gpu_parity.sh.
for t in test_nccl_communicator test_grad_sync_gpu test_pipeline_gpu test_rng_checkpoint test_nf4_gpu test_lora test_rope \
  test_model_gpu test_swiglu test_activation_offload test_qlora test_bnb_checkpoint test_adamw test_cross_entropy \
  test_loss_fused test_fp8; do
  f=$(find "$build/tests" -name "$t" -type f -perm -u+x | head -1)
  [ -n "$f" ] && pack "$f"
done
# Boost.Program_options is absent there; Open MPI's C++ binding library may be too (Ubuntu builds it optionally).
for lib in libboost_program_options libmpi_cxx; do
  path=$(ldd "$build/bin/ranktune-main" | awk -v l="$lib" '$1 ~ l {print $3}')
  if [ -n "$path" ]; then cp -L "$path" "$out/lib/"; fi
done
du -sh "$out"/*
# The run tool carries at most 64 MiB with the checkout; the unpacked binaries are about 55 MB, so they travel as
# .deps/prebuilt.tar.xz (about 7 MB), which bench/gpu_check.sh unpacks where the folder is absent.
tar -C .deps -cf - prebuilt | xz -T0 -6 >.deps/prebuilt.tar.xz
du -sh .deps/prebuilt.tar.xz
