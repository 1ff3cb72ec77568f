#!/usr/bin/env bash
# Balanced mode: pipelined (GPipe, m = 4, 8) against naive sequential (m = 1), tokens/s and each stage's busy time
# (with a host thread per stage or one host thread: m/on, m/off),
# for the TinyLlama-1.1B shape with LoRA r=16, seq 2048, micro-batch 8 (BENCH_PIPELINE_BATCH). One stage per GPU; on a one-GPU machine two
# stages share GPU 0 (that checks the executor end to end; no speed-up is possible there). Prints a markdown table.
# Run by bench/gpu_check.sh (RANKTUNE_BENCH=balanced_pipeline.sh) after the build.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-${RANKTUNE_BIN_DIR:-build-gpu/bin}/ranktune}
out=${OUT:-/tmp/ranktune-out}/bench-balanced
mkdir -p "$out"
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
stages=$(( gpus < 2 ? 2 : gpus ))
STEPS=${BENCH_STEPS:-10}
# Runs: m, or m/off | m/on to force parallel.stage_threads (default auto: a host thread per stage across GPUs).
MICRO=${BENCH_PIPELINE_M:-"1 4 8"}
BATCH=${BENCH_PIPELINE_BATCH:-8}  # sequences per micro-step, split into m pipeline micro-batches
shape=(--device=cuda --parallel.mode=balanced --parallel.stages="$stages" --model.hidden_size=2048
  --model.num_layers=22 --model.num_heads=32 --model.num_kv_heads=4 --model.intermediate_size=5632
  --model.vocab_size=32000 --model.tie_embeddings=false --model.max_seq_len=2048 --train.seq_len=2048
  --train.micro_batch=$BATCH --train.log_every=1 --train.eval_every=0 --train.warmup_steps=2 --train.lr=1e-4
  --lora.r=16 --lora.alpha=32 --checkpoint.every_steps=0 ${BENCH_PIPELINE_EXTRA:-})
echo "balanced pipeline bench: $gpus GPU(s), $stages stages, $BATCH sequences per micro-step, m in {$MICRO}, $STEPS steps"
for run in $MICRO; do
  m=${run%/*} threads=auto name=m$m
  [ "$run" != "$m" ] && threads=${run#*/} name=m${m}_$threads
  left=$(( ${BENCH_DEADLINE:-9999999999} - $(date +%s) ))
  [ "$left" -ge 50 ] || { echo "$run skipped: ${left} s left in this lease"; continue; }
  rm -rf "$out/$name"
  "$bin" train "${shape[@]}" --train.steps="$STEPS" --parallel.micro_batches="$m" --parallel.stage_threads="$threads" \
    --output_dir="$out/$name" --checkpoint.dir="$out/$name/ckpt" >"$out/$name.log" 2>&1 \
    || { echo "$run failed:"; tail -5 "$out/$name.log"; continue; }
  rm -rf "$out/$name/ckpt"
  grep -E '^(cuda|pipeline:|balanced:)' "$out/$name.log" | sed "s|^|  $run  |"
done
python3 - "$out" $MICRO <<'PY'
import json, re, statistics, sys
out, ms = sys.argv[1], sys.argv[2:]
rows = {}
for run in ms:
    name = "m" + run.replace("/", "_")
    try:
        metrics = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
        log = open(f"{out}/{name}.log", errors="replace").read()
    except OSError:
        continue
    steady = metrics[3:] or metrics
    busy = re.search(r"busy time per stage over ([\d.]+) s[^:]*:(.*)", log)
    shares = re.findall(r"\((\d+)%\)", busy.group(2)) if busy else []
    pred = re.search(r"predicted ([\d.]+)x", log)
    rows[run] = dict(threads="one per stage" if "one host thread per stage" in log else "one",
                     tps=statistics.median(r["tokens_per_s"] for r in steady),
                     peak=max(r.get("gpu_mem_gib", 0) for r in metrics), busy="/".join(s + "%" for s in shares),
                     pred=pred.group(1) if pred else "?", loss=metrics[-1]["loss"])
print("\n| micro-batches m | host threads | tokens/s | vs first | planner's prediction | busy per stage | peak GiB | final loss |")
print("|---|---|---|---|---|---|---|---|")
base = next(iter(rows.values()))["tps"] if rows else 1
for run, r in rows.items():
    print(f"| {run.split('/')[0]} | {r['threads']} | {r['tps']:,.0f} | {r['tps']/base:.2f}x | {r['pred']}x | {r['busy']} "
          f"| {r['peak']:.1f} | {r['loss']:.4f} |")
PY
