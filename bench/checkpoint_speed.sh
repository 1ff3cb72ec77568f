#!/usr/bin/env bash
# Checkpoint saves, synchronous against checkpoint.async (issue #19): the same full fine-tune twice with two periodic
# saves each (steps EVERY and 2 x EVERY, no save at the end), then per save the training stall, the staging copy, rank
# 0's write (write + fsync + rename + CRC32C of its file) and its GB/s, and the tokens/s of the steps trained while a
# background write ran against the other steps; then `dd` (O_DIRECT, fsync) on the same file system for comparison.
# Default: the TinyLlama-1.1B shape on CUDA (what docs/benchmarks.md records); SHAPE=tiny runs a small model on the CPU
# in seconds (how the script itself is tested). Environment:
#   RANKTUNE_BIN (ranktune), SHAPE (1.1b | tiny), EVERY (save interval in steps), OUT (logs, and the checkpoints
#   unless CKPT_ROOT names another file system), DD_MB (dd's size, default 8192 for 1.1b, 256 for tiny),
#   EXTRA (more ranktune arguments, e.g. "--train.micro_batch=2").
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-${RANKTUNE_BIN_DIR:-build-gpu/bin}/ranktune}
out=${OUT:-/tmp/ranktune-out}/bench/checkpoint_speed
ckpt_root=${CKPT_ROOT:-$out}
mkdir -p "$out" "$ckpt_root"
SHAPE=${SHAPE:-1.1b}
if [ "$SHAPE" = tiny ]; then
  EVERY=${EVERY:-6} DD_MB=${DD_MB:-256}
  shape=(--config configs/tiny.ini --device=cpu --model.hidden_size=256 --model.num_layers=4 --model.num_heads=4
    --model.num_kv_heads=2 --model.intermediate_size=688 --train.seq_len=128 --train.micro_batch=4)
else
  # ~0.19 s a step on one H100 (docs/benchmarks.md): 150 steps leave a 15.5 GB write ~28 s to finish between saves.
  EVERY=${EVERY:-150} DD_MB=${DD_MB:-8192}
  shape=(--device=cuda --model.hidden_size=2048 --model.num_layers=22 --model.num_heads=32 --model.num_kv_heads=4
    --model.intermediate_size=5632 --model.vocab_size=32000 --model.tie_embeddings=false --model.max_seq_len=2048
    --train.seq_len=2048 --train.micro_batch=4 --data.packing_attention=shared)
fi
STEPS=$((3 * EVERY - 1))
# shellcheck disable=SC2206
extra=(${EXTRA:-})

# run NAME ASYNC: one training run; its log is $out/NAME.log.
run() {
  local name=$1 async=$2
  rm -rf "${out:?}/$name" "${ckpt_root:?}/$name.ckpt"
  "$bin" train "${shape[@]}" --train.steps="$STEPS" --train.log_every=1 --train.eval_every=0 --train.warmup_steps=2 \
    --train.lr=1e-5 --checkpoint.every_steps="$EVERY" --checkpoint.at_end=false --checkpoint.async="$async" \
    --checkpoint.keep=2 --output_dir="$out/$name" --checkpoint.dir="$ckpt_root/$name.ckpt" "${extra[@]}" \
    >"$out/$name.log" 2>&1 || { echo "ranktune $name failed:"; tail -5 "$out/$name.log"; return 1; }
}

run sync false && run async true || exit 1

# dd on the checkpoints' file system: O_DIRECT writes of 64 MiB, fsync at the end; then the same through the page
# cache (what the save's write-back competes with when the kernel is left to flush on its own).
count=$(( (DD_MB + 63) / 64 ))
dd_line=$(dd if=/dev/zero of="$ckpt_root/ddtest" bs=64M count="$count" oflag=direct conv=fsync 2>&1 | tail -1)
rm -f "$ckpt_root/ddtest"
dd_cached_line=$(dd if=/dev/zero of="$ckpt_root/ddtest" bs=64M count="$count" conv=fsync 2>&1 | tail -1)
rm -f "$ckpt_root/ddtest"

grep -h '^checkpoint.async: ' "$out/async.log"
python3 - "$out" "$dd_line" "$ckpt_root" "$dd_cached_line" <<'PY'
import json, re, statistics, sys
out, dd_line, root, dd_cached_line = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
timing = re.compile(r"^checkpoint timing: step (\d+) (\w+): stall ([\d.]+) s \(staging ([\d.]+) s\), rank 0 wrote "
                    r"([\d.]+) MB in ([\d.]+) s \(([\d.]+) GB/s\)"
                    r"(?:: HDF5 write ([\d.]+) s, fsync \+ rename ([\d.]+) s, CRC32C re-read ([\d.]+) s)?")
print(f"| run | save at step | mode | stall s | staging s | rank 0 write s | HDF5 write s | fsync + rename s | "
      f"CRC32C s | MB | write GB/s | tokens/s while writing | tokens/s otherwise |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("sync", "async"):
    rows = {}
    for line in open(f"{out}/{name}/metrics.jsonl"):
        r = json.loads(line)
        rows[r["step"]] = r["tokens_per_s"]
    writing, pending = set(), None  # steps trained while a background write ran (between staging and commit)
    saves = []
    for line in open(f"{out}/{name}.log", errors="replace"):
        if m := re.match(r"^checkpoint: staged step (\d+)", line):
            pending = int(m.group(1))
        elif pending is not None and re.match(rf"^checkpoint: step {pending} ->", line):
            pending = None
        elif (m := re.match(r"^step (\d+)/", line)) and pending is not None:
            writing.add(int(m.group(1)))
        elif m := timing.match(line):
            saves.append(m.groups())
    steady = [s for s in rows if s > 4]
    during = [rows[s] for s in steady if s in writing]
    other = [rows[s] for s in steady if s not in writing]
    med = lambda v: f"{statistics.median(v):,.0f}" if v else "-"
    for step, mode, stall, staging, mb, write_s, gbs, h5, commit, crc in saves:
        phases = " | ".join(f"{float(v):.2f}" if v else "-" for v in (h5, commit, crc))
        print(f"| {name} | {step} | {mode} | {float(stall):.2f} | {float(staging):.2f} | {float(write_s):.2f} | "
              f"{phases} | {float(mb):,.0f} | {float(gbs):.2f} | {med(during)} | {med(other)} |")
m = re.search(r"([\d.]+) ([GM])B/s", dd_line)
print(f"\ndd (O_DIRECT, 64 MiB blocks, fsync) on {root}: {dd_line.strip()}")
if m:
    print(f"dd GB/s: {float(m.group(1)) / (1000 if m.group(2) == 'M' else 1):.2f}")
print(f"dd (page cache, 64 MiB blocks, fsync): {dd_cached_line.strip()}")
PY
