#!/usr/bin/env bash
# Makes tests/reference/fixtures/checkpoint_<commit>/: a full fine-tune and a LoRA checkpoint of a very small model,
# written by the ranktune binary of an earlier commit, plus the losses that binary prints when it resumes from them.
# tests/integration/checkpoint_compat.sh resumes them with today's binary and asserts the same losses, so a
# checkpoint written before a refactoring still resumes after it, bit for bit.
# usage: RANKTUNE_BIN=<that commit's build>/bin/ranktune bash tests/reference/make_checkpoint_fixture.sh <commit>
set -euo pipefail
: "${RANKTUNE_BIN:?path to the ranktune binary of the commit}"
commit=${1:?short commit of the binary}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/fixtures/checkpoint_$commit
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Small enough to keep in the repository (a few hundred KB), large enough to have every tensor kind.
shape=(--config "$here/../../configs/tiny.ini" --device=cpu --seed=7 --model.hidden_size=32 --model.num_layers=2
       --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=64 --train.seq_len=32
       --train.micro_batch=2 --train.warmup_steps=2 --train.log_every=1 --train.eval_every=0 --checkpoint.keep=1)
losses() { python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line); rows[r["step"]] = r["loss"]
for s in sorted(rows): print(s, repr(rows[s]))' "$1/metrics.jsonl"; }
for kind in full lora; do
  extra=()
  [ "$kind" = lora ] && extra=(--lora.r=4)
  # The checkpoint of step 4, as that binary committed it; then that binary resumes a copy of it to step 6.
  "$RANKTUNE_BIN" train "${shape[@]}" "${extra[@]}" --train.steps=4 --checkpoint.every_steps=4 \
    --output_dir="$work/$kind.a" --checkpoint.dir="$out/$kind" >/dev/null
  cp -r "$out/$kind" "$work/$kind.resume"
  "$RANKTUNE_BIN" train "${shape[@]}" "${extra[@]}" --train.steps=6 --checkpoint.every_steps=0 --checkpoint.at_end=false \
    --resume=auto --output_dir="$work/$kind.b" --checkpoint.dir="$work/$kind.resume" >/dev/null
  losses "$work/$kind.b" >"$out/$kind.resumed_losses.txt"
done
echo "written by $commit ($("$RANKTUNE_BIN" --version | head -1))" >"$out/README"
du -sh "$out"
