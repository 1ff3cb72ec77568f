#!/usr/bin/env bash
# Checkpoints written by an earlier ranktune (tests/reference/fixtures/checkpoint_<commit>, made by
# tests/reference/make_checkpoint_fixture.sh) verify and resume with today's binary, and the resumed steps give the
# losses that the earlier binary printed when it resumed them: the checkpoint format did not change.
source "$(dirname "$0")/lib.sh"
fixtures=$RANKTUNE_SOURCE/tests/reference/fixtures
shape=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=7 --model.hidden_size=32 --model.num_layers=2
       --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=64 --train.seq_len=32
       --train.micro_batch=2 --train.warmup_steps=2 --train.log_every=1 --train.eval_every=0 --checkpoint.keep=1)
found=0
for dir in "$fixtures"/checkpoint_*/; do
  commit=$(basename "$dir")
  commit=${commit#checkpoint_}
  for kind in full lora; do
    [ -d "$dir/$kind" ] || continue
    found=1
    extra=()
    [ "$kind" = lora ] && extra=(--lora.r=4)
    cp -r "$dir/$kind" "$WORK/$commit.$kind"
    run "verify_${commit}_$kind" 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/$commit.$kind"
    run "resume_${commit}_$kind" 0 "$RANKTUNE_BIN" train "${shape[@]}" "${extra[@]}" --train.steps=6 \
      --checkpoint.every_steps=0 --checkpoint.at_end=false --resume=auto --output_dir="$WORK/$commit.$kind.run" \
      --checkpoint.dir="$WORK/$commit.$kind"
    expect "resume_${commit}_$kind" out "step_00000004"
    if [ "$(losses "$WORK/$commit.$kind.run")" = "$(cat "$dir/$kind.resumed_losses.txt")" ]; then
      ok "$kind checkpoint of $commit: steps 5-6 resumed with the losses that $commit printed"
    else
      fail "$kind checkpoint of $commit: resumed losses differ"
      diff <(losses "$WORK/$commit.$kind.run") "$dir/$kind.resumed_losses.txt" | sed 's/^/    /'
    fi
  done
done
[ "$found" = 1 ] || fail "no checkpoint fixture under $fixtures"
finish
