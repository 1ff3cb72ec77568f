#!/usr/bin/env bash
# Issue #9 in one call on a multi-GPU machine (runs on one GPU too, doing what one GPU allows):
#   1. topology table of every rank and the refusal of balanced mode under mpirun -np 2;
#   2. all-reduce bus bandwidth of ranktune's NcclCommunicator vs a plain NCCL loop at 2/4/8 ranks;
#   3. DDP weak scaling, 1.1B shape, full fine-tune and LoRA r=16: tokens/s per GPU at 1, 2, 4, 8 ranks (mpirun);
#   4. balanced mode over all GPUs: pipelined m = 4, 8, 16 vs sequential (bench/balanced_pipeline.sh);
#   5. an 8B-shaped model that does not fit one GPU for full fine-tuning (micro-batch 16: ~175 GiB planned; the plan for one
#      stage is refused with the numbers), trained in balanced mode over all GPUs (plan + peak memory per GPU);
#   6. the seed's example (issue #20): a Llama-3.3-70B shape with an NF4 base and LoRA r=16 in balanced mode over all
#      GPUs: the plan per GPU against the measured peak, tokens/s sequential (m = 1) and pipelined (m = 4, 8), and the
#      refusal of the same command under mpirun -np 2. Random weights are drawn on the CPU one layer at a time and
#      quantized on the GPU: the start-up takes minutes.
# Run by bench/gpu_check.sh (RANKTUNE_BENCH=multi_gpu.sh) after the build. NVLink multicast stays off.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bindir=${RANKTUNE_BIN_DIR:-build-gpu/bin}
bin=$bindir/ranktune
allreduce=$bindir/ranktune_allreduce_bench
[ -x "$allreduce" ] || allreduce=${bindir%/bin}/bench/ranktune_allreduce_bench
out=${OUT:-/tmp/ranktune-out}/bench-multi
mkdir -p "$out"
gpus=$(nvidia-smi --list-gpus | wc -l)
sizes=(); for n in 1 2 4 8; do [ "$n" -le "$gpus" ] && sizes+=("$n"); done
mpi() { mpirun --bind-to none --oversubscribe -x NCCL_NVLS_ENABLE -np "$@"; }
step() { printf '\n=== %s ===\n' "$*"; }
# BENCH_PARTS picks parts (default: all of topology allreduce ddp balanced big qlora70b), e.g. to re-measure one in a
# short lease.
part() { [[ " ${BENCH_PARTS:-topology allreduce ddp balanced big qlora70b} " == *" $1 "* ]]; }
# BENCH_DEADLINE (epoch seconds, set by gpu_check.sh): a part that would not finish before it is skipped, and says so.
time_for() {
  local need=$1 left=$(( ${BENCH_DEADLINE:-9999999999} - $(date +%s) ))
  [ "$left" -ge "$need" ] && return 0
  echo "skipped: $2 (needs ~${need} s, ${left} s left in this lease)"; return 1
}
step "$gpus GPU(s); world sizes ${sizes[*]}"

if part topology; then
step "topology at every world size; balanced refused under mpirun -np 2"
for n in "${sizes[@]}"; do mpi "$n" "$bin" topology --parallel.mode=ddp 2>&1 | grep -vE '^\s*$' | head -$((n + 8)); done
[ "$gpus" -ge 2 ] && mpi 2 "$bin" topology --parallel.mode=balanced 2>&1 | grep -E 'error|hint' | sort -u
"$bin" topology --parallel.mode=balanced 2>&1 | tail -$((gpus + 6))
fi

part allreduce && step "all-reduce bus bandwidth (ranktune communicator vs plain NCCL)"
part allreduce && for n in "${sizes[@]}"; do
  [ "$n" -ge 2 ] || [ "$gpus" -eq 1 ] || continue
  mpi "$n" "$allreduce" $((1 << 30)) 20 2>&1 | tee "$out/allreduce_np$n.md"
done

if part ddp; then
step "DDP weak scaling (1.1B shape, seq 2048, micro-batch 4 per GPU)"
shape=(--device=cuda --model.hidden_size=2048 --model.num_layers=22 --model.num_heads=32 --model.num_kv_heads=4
  --model.intermediate_size=5632 --model.vocab_size=32000 --model.tie_embeddings=false --model.max_seq_len=2048
  --train.seq_len=2048 --train.micro_batch=4 --train.log_every=1 --train.eval_every=0 --train.warmup_steps=2
  --train.lr=1e-5 --checkpoint.every_steps=0 --train.steps=${BENCH_STEPS:-12})
for kind in full lora; do
  extra=(); [ "$kind" = lora ] && extra=(--lora.r=16 --lora.alpha=32)
  for n in "${sizes[@]}"; do
    name=ddp_${kind}_np$n; rm -rf "$out/$name"
    time_for 45 "$name" || continue
    mpi "$n" "$bin" train "${shape[@]}" "${extra[@]}" --parallel.mode=ddp --output_dir="$out/$name" \
      --checkpoint.dir="$out/$name/ckpt" >"$out/$name.log" 2>&1 || { echo "$name failed"; tail -5 "$out/$name.log"; }
    rm -rf "$out/$name/ckpt"
  done
done
python3 - "$out" "${sizes[@]}" <<'PY'
import json, statistics, sys
out, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
print("| mode | ranks | tokens/s (all GPUs) | tokens/s per GPU | efficiency vs 1 rank | MFU |")
print("|---|---|---|---|---|---|")
for kind in ("full", "lora"):
    base = None
    for n in sizes:
        try: rows = [json.loads(l) for l in open(f"{out}/ddp_{kind}_np{n}/metrics.jsonl")][4:]
        except OSError: continue
        tps = statistics.median(r["tokens_per_s"] for r in rows); per = tps / n
        base = base or per
        print(f"| {kind} | {n} | {tps:,.0f} | {per:,.0f} | {100*per/base:.1f}% | {100*statistics.median(r['mfu'] for r in rows):.1f}% |")
PY
fi

if part balanced; then
step "balanced pipelining over all GPUs"
# Chunks of >= 2 sequences: below ~4 sequences of 2048 tokens per kernel launch the per-sequence speed falls steeply.
# 32 sequences of 2048 tokens hold their activations only with activation checkpointing (the same for every m).
if [ "$gpus" -ge 2 ]; then m_list="1 4 8 16 8/off" batch=${BENCH_PIPELINE_BATCH:-32} extra=--train.activation_checkpointing=true
else m_list="1 4 8" batch=8 extra=""; fi
BENCH_PIPELINE_M=${BENCH_PIPELINE_M:-$m_list} BENCH_PIPELINE_BATCH=$batch BENCH_PIPELINE_EXTRA=$extra RANKTUNE_BIN=$bin \
  bash bench/balanced_pipeline.sh
fi

if part big && [ "$gpus" -ge 2 ]; then
  step "8B shape, full fine-tune, balanced over $gpus GPUs (does not fit one GPU)"
  big=(--device=cuda --parallel.mode=balanced --model.hidden_size=4096 --model.num_layers=32 --model.num_heads=32
    --model.num_kv_heads=8 --model.intermediate_size=14336 --model.vocab_size=128256 --model.tie_embeddings=false
    --model.max_seq_len=2048 --train.seq_len=2048 --train.micro_batch=16 --train.activation_checkpointing=true
    --train.steps=6 --train.log_every=1 --train.eval_every=0 --train.lr=2e-5 --checkpoint.at_end=false)
  echo "on one GPU:"; "$bin" plan "${big[@]}" --parallel.stages=1 2>&1 | grep -E 'error|hint'
  "$bin" plan "${big[@]}" --parallel.micro_batches=8 2>&1 | grep -vE '^\s*$' | tail -9
  # BENCH_BIG_M: pipeline micro-batches of each 8B run (1 = naive sequential, for the speed-up at this size).
  for m in ${BENCH_BIG_M:-8}; do
    time_for 120 "8B balanced run, m = $m" || continue
    t0=$(date +%s)
    "$bin" train "${big[@]}" --parallel.micro_batches="$m" --output_dir="$out/big_m$m" \
      --checkpoint.dir="$out/big_m$m/ckpt" >"$out/big_m$m.log" 2>&1 || { echo "8B m=$m failed"; tail -5 "$out/big_m$m.log"; }
    echo "m = $m: $(( $(date +%s) - t0 )) s including start-up"
    grep -aE '^(step|balanced:|done)' "$out/big_m$m.log" | tail -5
  done
fi

if part qlora70b && [ "$gpus" -ge 2 ]; then
  step "Llama-3.3-70B shape, NF4 base, LoRA r=16, balanced over $gpus GPUs"
  q70=(--device=cuda --parallel.mode=balanced --model.hidden_size=8192 --model.num_layers=80 --model.num_heads=64
    --model.num_kv_heads=8 --model.intermediate_size=28672 --model.vocab_size=128256 --model.tie_embeddings=false
    --model.max_seq_len=2048 --model.quantize=nf4 --lora.r=16 --lora.alpha=32 --train.seq_len=2048
    --train.activation_checkpointing=true --train.steps=${BENCH_70B_STEPS:-6} --train.log_every=1
    --train.eval_every=0 --train.lr=1e-4 --checkpoint.at_end=false)
  # micro-batch 8 per step so that m = 8 has one sequence per micro-batch; the plan is printed per m below.
  echo "the same command under mpirun -np 2 (refused on every rank, exit 2):"
  mpi 2 "$bin" train "${q70[@]}" --train.micro_batch=8 --output_dir="$out/q70_refused" 2>&1 | grep -E 'error|hint' | sort -u
  for m in ${BENCH_70B_M:-1 4 8}; do
    echo "--- m = $m: plan"
    "$bin" plan "${q70[@]}" --train.micro_batch=8 --parallel.micro_batches="$m" 2>&1 | grep -vE '^\s*$' | tail -$((gpus + 3))
    time_for 420 "70B QLoRA balanced run, m = $m" || continue
    t0=$(date +%s)
    "$bin" train "${q70[@]}" --train.micro_batch=8 --parallel.micro_batches="$m" --output_dir="$out/q70_m$m" \
      --checkpoint.dir="$out/q70_m$m/ckpt" >"$out/q70_m$m.log" 2>&1 || { echo "70B m=$m failed"; tail -5 "$out/q70_m$m.log"; }
    echo "m = $m: $(( $(date +%s) - t0 )) s including start-up"
    # the measured peak per GPU (the balanced summary) beside the plan above, and the steady tokens/s
    grep -aE '^(step|balanced:|done|model:)' "$out/q70_m$m.log" | tail -6
  done
fi
