#!/usr/bin/env bash
# Resume compares this run's settings with the ones the checkpoint recorded (issue 16, point 12). A small model trains
# 4 steps on CPU with a checkpoint, full and LoRA; resuming it with another learning rate prints the changed settings
# in one line and continues (exit 0); another model.hidden_size (random init) or lora.r is refused before any step
# (exit 2, one line naming the key, both values and the fix), and the checkpoint stays as it was. A checkpoint whose
# rank file records no settings (older ranktune) resumes with a note.
source "$(dirname "$0")/lib.sh"
SHAPE=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=7 --model.num_layers=2 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=64 --train.seq_len=32 --train.micro_batch=2 --train.warmup_steps=2
  --train.log_every=1 --train.eval_every=0 --checkpoint.every_steps=4 --checkpoint.at_end=false)

# [HIDDEN=D] [LORA_R=R] train NAME KIND RC EXTRA...: KIND's run (full, or lora of rank R, 4 unless given) of hidden
# size D (32 unless given) in $WORK/KIND.run and $WORK/KIND.ckpt (the same directories for every run of a kind, so that
# only what a test changes differs from the checkpoint's settings).
train() {
  local name=$1 kind=$2 want=$3
  shift 3
  local lora=()
  [ "$kind" = lora ] && lora=(--lora.r="${LORA_R:-4}")
  run "$name" "$want" "$RANKTUNE_BIN" train "${SHAPE[@]}" --model.hidden_size="${HIDDEN:-32}" "${lora[@]}" \
    --output_dir="$WORK/$kind.run" --checkpoint.dir="$WORK/$kind.ckpt" "$@"
}

for kind in full lora; do
  train "$kind" "$kind" 0 --train.steps=4
  expect "$kind" out "checkpoint: step 4 -> $WORK/$kind.ckpt/step_00000004"
done

# Another learning rate (and more steps): shown, then training goes on from step 4.
train lr full 0 --train.steps=6 --resume=auto --train.lr=5e-4
ck=$WORK/full.ckpt/step_00000004
expect lr out "resume: settings changed since $ck: train.steps 4 -> 6, train.lr 0.001 -> 0.0005"
expect lr out "resume: $ck (step 4,"
expect lr out "step 6/6"

# The same settings: nothing to show.
train same full 0 --train.steps=4 --resume=auto
lines same out "settings changed" 0

# A random-init model of another width: its saved weights mean nothing there.
HIDDEN=64 train hidden full 2 --train.steps=6 --resume=auto
expect hidden err "ranktune: error: cannot resume $ck: model.hidden_size was 32 there, this run sets 64"
expect hidden err "hint: resume with --model.hidden_size=32, or train anew: another --checkpoint.dir, or --resume="
lines hidden err "error:" 1
lines hidden out "step 5/" 0

# Another LoRA rank over a LoRA checkpoint, and LoRA over a full fine-tune's checkpoint.
LORA_R=8 train rank lora 2 --train.steps=6 --resume=auto
expect rank err "cannot resume $WORK/lora.ckpt/step_00000004: lora.r was 4 there, this run sets 8"
expect rank err "hint: resume with --lora.r=4,"
train lora_over_full full 2 --train.steps=6 --resume=auto --lora.r=4
expect lora_over_full err "cannot resume $ck: lora.r was 0 there, this run sets 4"

# The refusals left both checkpoints as they were.
for kind in full lora; do
  [ "$(cat "$WORK/$kind.ckpt/latest")" = step_00000004 ] && ok "$kind: latest still names step 4" \
    || fail "$kind: latest moved"
  run "verify_$kind" 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/$kind.ckpt"
done

# A checkpoint of an older ranktune: its rank file has no `config` attribute (removed here, the manifest resealed).
mkdir -p "$WORK/legacy"
cp -r "$WORK/full.ckpt/step_00000004" "$WORK/legacy/"
echo step_00000004 >"$WORK/legacy/latest"
python3 - "$WORK/legacy/step_00000004" "$RANKTUNE_SOURCE/tests/support" <<'PY' \
  && ok "legacy: config attribute removed" || fail "legacy checkpoint not written"
import pathlib, sys
import h5py
sys.path.insert(0, sys.argv[2])
from crc32c_ref import reseal_manifest
step = pathlib.Path(sys.argv[1])
for f in sorted(step.glob("rank_*.h5")):
    with h5py.File(f, "r+") as h:
        del h.attrs["config"]
reseal_manifest(step)
PY
run legacy 0 "$RANKTUNE_BIN" train "${SHAPE[@]}" --model.hidden_size=32 --train.steps=5 --resume=auto --train.lr=5e-4 \
  --output_dir="$WORK/legacy.run" --checkpoint.dir="$WORK/legacy"
expect legacy out "resume: $WORK/legacy/step_00000004 does not record its settings (written by an older ranktune)"
expect legacy out "step 5/5"
finish
