#!/usr/bin/env bash
# Issue #18's single-GPU 70B QLoRA: the Llama-3.3-70B shape (d 8192, 80 layers, 64 heads, 8 KV heads, FFN 28672,
# vocab 128256) with random weights written on the GPU as a "...-bnb-4bit" directory (bench/peer_common.py --bnb4:
# each linear drawn in bf16, quantized by bitsandbytes and written with its layer, about 40 GB on disk, never 140),
# then on that one directory: `ranktune plan`, ranktune QLoRA (LoRA r=16 on all linears, activation checkpointing,
# batch 1 x Q70_SEQ) for Q70_STEPS steps with the measured peak beside the plan, and Unsloth's QLoRA with its own
# checkpointing (when .deps/unsloth.tar.xz is there). Prints one JSON row each; the plan and logs go to stderr.
# Environment: OUT (logs; the directory goes to $OUT/bench/qlora_70b unless Q70_DIR names another place, and is reused
# when there), RANKTUNE_BIN or RANKTUNE_BIN_DIR, Q70_STEPS (6), Q70_SEQ (2048), Q70_UNSLOTH (1), BENCH_DEADLINE
# (epoch seconds: Unsloth's row is skipped when less than 150 s are left). SHAPE=tiny DEVICE=cpu checks the script
# itself on a CPU in seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-${RANKTUNE_BIN_DIR:-build-gpu/bin}/ranktune}
out=${OUT:-/tmp/ranktune-out}/bench/qlora_70b
SHAPE=${SHAPE:-70b}
DEVICE=${DEVICE:-cuda}
STEPS=${Q70_STEPS:-6}
SEQ=${Q70_SEQ:-2048}
dir=${Q70_DIR:-$out/model_${SHAPE}_bnb4}
mkdir -p "$out"

# bitsandbytes writes the directory: from the unpacked Unsloth folder where the image lacks it (the GPU machine).
site=${TMPDIR:-/tmp}/unsloth-site
if ! python3 -c 'import bitsandbytes' 2>/dev/null && [ -f .deps/unsloth.tar.xz ]; then
  [ -d "$site" ] || tar -xJf .deps/unsloth.tar.xz -C "${TMPDIR:-/tmp}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ! -f "$dir/config.json" ]; then
  t0=$(date +%s)
  python3 bench/peer_common.py "$dir" --shape "$SHAPE" --seq "$SEQ" --bnb4 >"$out/write.log" 2>&1 \
    || { echo "writing the 4-bit directory failed:"; tail -5 "$out/write.log"; exit 1; }
  echo "4-bit model directory written in $(( $(date +%s) - t0 )) s: $(du -sh "$dir" | cut -f1) at $dir" >&2
fi

args=(--device="$DEVICE" --model.path="$dir" --data.tokenizer=byte --lora.r=16 --lora.alpha=32
  --train.seq_len="$SEQ" --train.micro_batch=1 --train.activation_checkpointing=true --train.steps="$STEPS"
  --train.log_every=1 --train.eval_every=0 --train.warmup_steps=2 --train.lr=1e-5 --checkpoint.every_steps=0
  --checkpoint.at_end=false --data.packing_attention=shared)
"$bin" plan "${args[@]}" >"$out/plan.log" 2>&1 || { echo "ranktune plan failed:" >&2; tail -5 "$out/plan.log" >&2; }
grep -vE '^\s*$' "$out/plan.log" | tail -12 >&2

t0=$(date +%s)
if "$bin" train "${args[@]}" --output_dir="$out/ranktune" >"$out/ranktune.log" 2>&1; then
  python3 - "$out/ranktune/metrics.jsonl" "$(( $(date +%s) - t0 ))" "$SEQ" "$out/plan.log" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = rows[2:] or rows
plan = re.search(r"footprint on one device ([\d.]+) GiB", open(sys.argv[4], errors="replace").read())
print(json.dumps({"impl": "ranktune", "mode": "qlora_ac", "tokens_per_s": round(statistics.median(
    r["tokens_per_s"] for r in steady)), "mfu": round(statistics.median(r.get("mfu", 0) for r in steady), 4),
    "peak_gib": round(max(r.get("gpu_mem_gib", 0) for r in rows), 2), "loss": round(rows[-1]["loss"], 4),
    "plan_gib": float(plan.group(1)) if plan else None, "seq": int(sys.argv[3]), "wall_s": int(sys.argv[2]),
    "steps": len(rows)}))
PY
else
  tail -5 "$out/ranktune.log" >&2
  python3 -c 'import json, sys; print(json.dumps({"impl": "ranktune", "mode": "qlora_ac", "error": sys.argv[1]}))' \
    "$(grep -aE 'error|out of memory' "$out/ranktune.log" | tail -1 | cut -c1-240)"
fi
grep -aE '^(model|plan|memory|lora):' "$out/ranktune.log" | head -8 >&2

if [ "${Q70_UNSLOTH:-1}" = 1 ] && [ "$DEVICE" = cuda ] && [ -f .deps/unsloth.tar.xz ]; then
  if [ $(( ${BENCH_DEADLINE:-9999999999} - $(date +%s) )) -lt 150 ]; then
    echo "skipped Unsloth: deadline" >&2
  else
    [ -d "$site" ] || tar -xJf .deps/unsloth.tar.xz -C "${TMPDIR:-/tmp}"
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" UNSLOTH_DISABLE_STATISTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      python3 bench/unsloth_peer.py --modes qlora_gc --shape "$SHAPE" --model-dir "$dir" --batch 1 --seq "$SEQ" \
        --warmup 1 --steps 3 2>>"$out/unsloth.log" | grep '^{'
  fi
fi
