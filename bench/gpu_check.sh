#!/usr/bin/env bash
# One call on the GPU machine: build ranktune, run the whole test suite (GPU tests included), exercise the topology
# command on the real GPU, then run the benchmark binaries named in $RANKTUNE_BENCH_BINS (e.g. ranktune_adamw_bench)
# and the benchmarks named in $RANKTUNE_BENCH (space-separated bench/*.sh names). With prebuilt binaries,
# RANKTUNE_GPU_TESTS=0 skips the GPU tests (a call that only measures).
# Logs go to $OUT (default /tmp/ranktune-out). Needs .deps/ from bench/carry_deps.sh copied next to the checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ranktune-out}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# NVLink multicast stays off: on a host whose GPUs are shared, a program using it can take them out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
step() { printf '\n=== %s ===\n' "$*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
nproc

# A deadline (epoch seconds) for the benchmarks, so that a short lease ends with results rather than a kill.
export BENCH_DEADLINE=$(( $(date +%s) + ${RANKTUNE_BUDGET_S:-100000} ))
bin_dir=build-gpu/bin
tests_dir=""
if [ -n "${RANKTUNE_PREBUILT:-}" ]; then
  step "prebuilt binaries from $RANKTUNE_PREBUILT (bench/carry_build.sh)"
  # carried packed (the run tool's 64 MiB limit): unpacked next to the archive
  [ ! -d "$RANKTUNE_PREBUILT" ] && [ -f "$RANKTUNE_PREBUILT.tar.xz" ] \
    && tar -C "$(dirname "$RANKTUNE_PREBUILT")" -xJf "$RANKTUNE_PREBUILT.tar.xz"
  site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  libs="$PWD/$RANKTUNE_PREBUILT/lib:$site/torch/lib"
  for d in "$site"/nvidia/*/lib; do libs="$libs:$d"; done
  export LD_LIBRARY_PATH="$libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  if "$RANKTUNE_PREBUILT/bin/ranktune" --version; then
    bin_dir=$RANKTUNE_PREBUILT/bin tests_dir=$RANKTUNE_PREBUILT/bin RANKTUNE_SKIP_CTEST=1
  else
    ldd "$RANKTUNE_PREBUILT/bin/ranktune-main" | grep 'not found'; echo "prebuilt binaries do not start here"
    [ "${RANKTUNE_NO_BUILD:-0}" = 1 ] && exit 3  # a short lease has no time for a build
    echo "building instead"
  fi
fi

if [ "$bin_dir" = build-gpu/bin ]; then
step "configure + build"
start=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBoost_DIR="$PWD/.deps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0" -DRANKTUNE_BOOST_STATIC=ON \
  -Dnlohmann_json_DIR="$PWD/.deps/usr/share/cmake/nlohmann_json" >"$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
ninja -C build-gpu >"$OUT/build.log" 2>&1 || { grep -E 'error|FAILED' -A3 "$OUT/build.log" | head -60; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
for o in $(find build-gpu -name '*.cu.o'); do echo "$o:"; cuobjdump --list-elf --list-ptx "$o" | sed 's/^/  /'; done
fi
export RANKTUNE_BIN_DIR=$bin_dir

if [ "${RANKTUNE_SKIP_CTEST:-0}" != 1 ]; then
step "ctest (all labels)"
RANKTUNE_RESUME_STOPS=${RANKTUNE_RESUME_STOPS:-3} ctest --test-dir build-gpu -j8 -LE slurm --output-on-failure >"$OUT/ctest.log" 2>&1
grep -E 'tests passed|Failed|\*\*\*|Skipped|Not Run' "$OUT/ctest.log" | head -40
step "GPU test output"
ctest --test-dir build-gpu -L gpu -V >"$OUT/ctest-gpu.log" 2>&1
grep -E '\[ +(OK|FAILED|SKIPPED) +\]|rel(ative)? err|bucket|launch|DDP:|abandoned' "$OUT/ctest-gpu.log" | sed 's/^[0-9]*: //' | head -60
elif [ -n "$tests_dir" ] && [ "${RANKTUNE_GPU_TESTS:-1}" != 0 ]; then
step "GPU tests (prebuilt), NCCL ones at 1 and every-GPU ranks"
ngpu=$(nvidia-smi --list-gpus | wc -l)
{
  for t in test_nccl_communicator test_grad_sync_gpu; do
    for n in 1 $([ "$ngpu" -ge 2 ] && echo 2); do
      echo "--- $t at $n rank(s)"; mpirun --oversubscribe --bind-to none -x NCCL_NVLS_ENABLE -np "$n" "$tests_dir/$t"
      echo "exit $?"
    done
  done
  for t in test_pipeline_gpu test_rng_checkpoint test_nf4_gpu test_model_gpu test_rope test_swiglu test_activation_offload \
    test_adamw test_cross_entropy test_fp8; do
    [ -x "$tests_dir/$t" ] && { echo "--- $t"; "$tests_dir/$t"; echo "exit $?"; }
  done
  [ -x "$tests_dir/test_lora" ] && { echo "--- test_lora (GPU cases)"; "$tests_dir/test_lora" --gtest_filter="*Gpu*"; echo "exit $?"; }
  [ -x "$tests_dir/test_loss_fused" ] && {
    echo "--- test_loss_fused (GPU cases)"; "$tests_dir/test_loss_fused" --gtest_filter="*Gpu*"; echo "exit $?"
  }
} >"$OUT/gpu-tests.log" 2>&1
grep -E '^---|^exit|\[ +(OK|FAILED|SKIPPED) +\]|bucket 0|abandoned|PASSED|FAILED TEST|loss peak' "$OUT/gpu-tests.log" | head -150
fi

if [ "${RANKTUNE_SKIP_TOPOLOGY:-0}" != 1 ]; then
step "ranktune topology on the GPU"
bin=$bin_dir/ranktune
$bin --version
$bin topology
echo "exit $?"
step "world size 1 ddp (NCCL)"
mpirun -np 1 $bin topology --parallel.mode=ddp
echo "exit $?"
step "balanced with one GPU"
$bin topology --parallel.mode=balanced
echo "exit $?"
step "refusals"
mpirun -np 2 --oversubscribe bash -c "$bin topology --parallel.mode=balanced; echo rank \$OMPI_COMM_WORLD_RANK exit \$?"
mpirun -np 2 --oversubscribe bash -c "$bin topology --parallel.mode=ddp; echo rank \$OMPI_COMM_WORLD_RANK exit \$?"
CUDA_VISIBLE_DEVICES= $bin topology; echo "exit $?"
CUDA_VISIBLE_DEVICES=0,0 $bin topology; echo "exit $?"
CUDA_VISIBLE_DEVICES=5 $bin topology; echo "exit $?"

fi

for b in ${RANKTUNE_BENCH_BINS:-}; do
  step "$b"
  "$bin_dir/$b" 2>&1 | tee "$OUT/bench-$b.log" | tail -40
done

for b in ${RANKTUNE_BENCH:-}; do
  step "bench/$b"
  bash "bench/$b" 2>&1 | tee "$OUT/bench-${b%.sh}.log" | tail -40
done
