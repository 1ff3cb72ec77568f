# A save that meets an already committed step (issue 16, point 1): the step committed before is moved aside to
# step_N.replaced-<UTC time> (kept, never deleted) and the step is written anew, so `latest` ends on what this run
# wrote and verifies. Two ways to get there at 1 rank:
# - damaged: step 10's rank file has a flipped byte; --resume=auto falls back to step 5, retrains 6..10 and saves
#   step 10 again (before the fix: "already committed", nothing written, `latest` still on the damaged step);
# - behind: `latest` names step 5 while step 10 is committed, the state a crash between the manifest's and `latest`'s
#   renames leaves; the resumed run saves step 10 again and `latest` must end on it, not on step 5.
# In both the retrained steps 6..10 log the losses of the first run, bit for bit.
source "$(dirname "$0")/lib.sh"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=7 --train.log_every=1 --train.steps=10
  --checkpoint.every_steps=5 --train.eval_every=0 --model.hidden_size=32 --model.num_layers=2 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=64 --train.seq_len=32 --train.micro_batch=2)

# train NAME CKPT EXTRA...: a 1-process run with its own output directory $WORK/NAME, saving under $WORK/CKPT.
train() {
  local name=$1 ckpt=$2; shift 2
  run "$name" 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --output_dir="$WORK/$name" --checkpoint.dir="$WORK/$ckpt" "$@"
}

# retrained NAME REF: steps 6..10 of run NAME have the losses of run REF.
retrained() {
  if cmp -s <(losses "$WORK/$1") <(losses "$WORK/$2" | awk '$1 > 5'); then
    ok "$1: steps 6-10 bit-identical to $2's"
  else
    fail "$1: losses of steps 6-10 differ from $2's"
    diff <(losses "$WORK/$1") <(losses "$WORK/$2" | awk '$1 > 5') | head -5
  fi
}

# after NAME CKPT: `latest` names step 10, the step verifies, and step 10 was moved aside exactly once.
after() {
  local name=$1 ckpt=$WORK/$2
  [ "$(cat "$ckpt/latest")" = step_00000010 ] && ok "$name: latest names step_00000010" \
    || fail "$name: latest holds '$(cat "$ckpt/latest")'"
  run "$name.verify" 0 "$RANKTUNE_BIN" checkpoint verify "$ckpt"
  expect "$name.verify" out ": ok (step 10,"
  local asides
  asides=$(cd "$ckpt" && ls -d step_00000010.replaced-* 2>/dev/null | wc -l)
  [ "$asides" = 1 ] && ok "$name: one step_00000010.replaced-* directory" || fail "$name: $asides aside directories"
  expect "$name" out \
    "moved aside the step_00000010 committed before (a damaged step or another run's) to step_00000010.replaced-"
  expect "$name" out "; written again"
  lines "$name" out "already committed" 0
}

# Damaged step 10.
train first damaged
[ "$(cat "$WORK/damaged/latest")" = step_00000010 ] && ok "first: latest names step 10" || fail "first: no step 10"
victim=$WORK/damaged/step_00000010/rank_00000.h5
python3 - "$victim" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    at = os.path.getsize(sys.argv[1]) // 2  # the CRC32C of the whole file catches a flip anywhere
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0xFF]))
PY
run damaged.before 5 "$RANKTUNE_BIN" checkpoint verify "$WORK/damaged"
train again damaged --resume=auto
expect again out "WARNING: checkpoint: --resume=auto skips $WORK/damaged/step_00000010"
expect again out "resume: $WORK/damaged/step_00000005 (step 5,"
after again damaged
# The damaged step is kept as it was: still failing verify under its aside name.
aside=$(ls -d "$WORK"/damaged/step_00000010.replaced-* 2>/dev/null | head -1)
if [ -n "$aside" ]; then run damaged.aside 5 "$RANKTUNE_BIN" checkpoint verify "$aside"; fi
[ -d "$WORK/damaged/step_00000005" ] && ok "again: step 5 kept" || fail "again: step 5 pruned"
retrained again first

# `latest` behind a newer committed step.
train clean behind
echo step_00000005 >"$WORK/behind/latest"
train resumed behind --resume=auto
expect resumed out "resume: $WORK/behind/step_00000005 (step 5,"
after resumed behind
retrained resumed clean

# A fresh start (--resume=none, the default) into a directory holding another run's checkpoints is refused before
# any step, naming the directory and the fixes; --resume=overwrite moves every committed step aside (kept) and starts
# from step 1, and `latest` ends on its own step 10.
run fresh_refused 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --output_dir="$WORK/fresh_refused" --checkpoint.dir="$WORK/behind"
expect fresh_refused err "already holds"
expect fresh_refused err "hint: --resume=auto continues that run; --resume=overwrite moves its checkpoints aside"
lines fresh_refused out "step 1/" 0
[ "$(cat "$WORK/behind/latest")" = step_00000010 ] && ok "fresh_refused: latest untouched" \
  || fail "fresh_refused: latest holds '$(cat "$WORK/behind/latest")'"
train overwrite behind --resume=overwrite
expect overwrite out "--resume=overwrite: moved aside the committed checkpoint(s) under $WORK/behind"
expect overwrite out "step 1/"
[ "$(cat "$WORK/behind/latest")" = step_00000010 ] && ok "overwrite: latest names its own step_00000010" \
  || fail "overwrite: latest holds '$(cat "$WORK/behind/latest")'"
if cmp -s <(losses "$WORK/overwrite") <(losses "$WORK/clean"); then ok "overwrite: the losses of a fresh run"
else fail "overwrite: losses differ from a fresh run's"; fi
n5=$(cd "$WORK/behind" && ls -d step_00000005.replaced-* 2>/dev/null | wc -l)
[ "$n5" -ge 1 ] && ok "overwrite: the old step 5 kept aside" || fail "overwrite: the old step 5 is gone"
finish
