#!/usr/bin/env bash
# Issue #18's GPU parity in one call on the GPU machine, from the repository root: `bash bench/qlora_gpu_parity.sh`.
# PEFT + bitsandbytes and transformers + bitsandbytes make parity fixtures there (make_qlora_fixture.py --device cuda
# --dtype bfloat16: a QLoRA forward and backward; make_bnb4_fixture.py --device cuda: a "-bnb-4bit" directory quantized
# on the GPU, with transformers' bf16 logits over it and over the committed bnb4_tiny), then the prebuilt test binaries
# (bench/carry_build.sh) compare ranktune on the GPU with them and print the relative errors: QloraPeftGpu (logits,
# loss, one step's adapter gradients) and BnbCheckpointGpu (dequantization bit for bit, bf16 logits).
# Needs .deps/unsloth.tar.xz (bench/carry_unsloth.sh: bitsandbytes, unpacked as train_throughput.sh's unsloth run
# does) and .deps/prebuilt (bench/carry_build.sh). RANKTUNE_BIN_DIR names other prebuilt binaries; logs and copies of
# the fixtures go to $OUT (default /tmp/ranktune-out). Exit 0 when both tests ran and passed, 1 when one failed or
# skipped itself, 2 when a fixture could not be made or a binary is missing. RANKTUNE_PARITY_DEVICE=cpu makes and
# checks CPU bf16 fixtures instead (a check of this script where no GPU is; RANKTUNE_BIN_DIR=build/tests/model).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/ranktune-out}
mkdir -p "$OUT"
bin_dir=${RANKTUNE_BIN_DIR:-.deps/prebuilt/bin}
device=${RANKTUNE_PARITY_DEVICE:-cuda}
step() { printf '\n=== %s ===\n' "$*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for t in test_qlora test_bnb_checkpoint; do
  [ -x "$bin_dir/$t" ] || { echo "$bin_dir/$t is missing: run bench/carry_build.sh where it was built"; exit 2; }
done

tmp=${TMPDIR:-/tmp}
site=$tmp/unsloth-site
[ -d "$site" ] || tar -xJf .deps/unsloth.tar.xz -C "$tmp" || { echo "unpacking .deps/unsloth.tar.xz failed"; exit 2; }
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -c 'import bitsandbytes, peft, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "bitsandbytes", bitsandbytes.__version__)' || exit 2

# The prebuilt binaries' libraries, as gpu_check.sh finds them: the carried ones, torch's and the CUDA wheels'.
torch_site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
libs="$(cd "$bin_dir/.." && pwd)/lib:$torch_site/torch/lib"
for d in "$torch_site"/nvidia/*/lib; do libs="$libs:$d"; done
export LD_LIBRARY_PATH="$libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

fixtures=$(mktemp -d "$tmp/ranktune-parity.XXXXXX")
step "fixtures made on $device in $fixtures"
make_fixture() {  # make_fixture NAME SCRIPT ARGS...: a fixture into $fixtures/NAME; its log in $OUT
  local name=$1 script=$2; shift 2
  if ! python3 "tests/reference/$script" --out "$fixtures/$name" "$@" >"$OUT/parity_fixture_$name.log" 2>&1; then
    echo "$script $* failed:"; tail -20 "$OUT/parity_fixture_$name.log"; exit 2
  fi
  grep -E 'differs' "$OUT/parity_fixture_$name.log"  # bnb's CUDA dequantization against its own reference
  mkdir -p "$OUT/parity_fixtures/$name"
  cp "$fixtures/$name"/*.safetensors "$fixtures/$name"/*.json "$OUT/parity_fixtures/$name/" 2>/dev/null
  echo "$name: made"
}
make_fixture qlora make_qlora_fixture.py --device "$device" --dtype bfloat16
make_fixture bnb4 make_bnb4_fixture.py --device "$device"

rc=0
check() {  # check VAR DIR BINARY FILTER: one test binary's parity case against the fixture in DIR
  local var=$1 dir=$2 t=$3 filter=$4 log="$OUT/parity_$3.log"
  step "$t --gtest_filter=$filter ($var=$dir)"
  env "$var=$dir" "$bin_dir/$t" --gtest_filter="$filter" >"$log" 2>&1
  local status=$?
  grep -vE '^\[-+\]|^$|^Running main|^Note: Google Test filter' "$log"
  if [ "$status" != 0 ]; then
    echo "$t: FAILED (exit $status)"; rc=1
  elif grep -q '\[  SKIPPED \]' "$log" || ! grep -q '\[  PASSED  \] 1 test' "$log"; then
    echo "$t: did not run its GPU case"; rc=1
  fi
}
check RANKTUNE_QLORA_FIXTURE_DIR "$fixtures/qlora" test_qlora 'QloraPeftGpu.*'
check RANKTUNE_BNB4_FIXTURE_DIR "$fixtures/bnb4" test_bnb_checkpoint 'BnbCheckpointGpu.*'
step "result"
[ "$rc" = 0 ] && echo "QLoRA GPU parity: both tests passed" || echo "QLoRA GPU parity: FAILED (logs in $OUT)"
exit "$rc"
