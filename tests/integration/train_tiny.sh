# The embedded default job (configs/tiny.ini, 200 steps on CPU): the held-out loss ends below 1.0 (it starts at
# ln(259) = 5.56 for the byte vocabulary), a sample is printed, metrics files are written.
source "$(dirname "$0")/lib.sh"
run tiny 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --output_dir="$WORK/run" \
  --checkpoint.dir="$WORK/ckpt"
expect tiny out "step 200/200"
expect tiny out "sample: ["
held=$(sed -nE 's/^done: 200 steps, loss .* held-out loss ([0-9.]+)$/\1/p' "$WORK/tiny.out")
python3 -c "import sys; sys.exit(0 if float('${held:-99}') < 1.0 else 1)" && ok "held-out loss $held < 1.0" \
  || fail "held-out loss '${held}' not below 1.0"
[ -s "$WORK/run/metrics.jsonl" ] && [ -s "$WORK/run/metrics.csv" ] && ok "metrics written" || fail "metrics missing"
run ckpt_verify 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/ckpt"
finish
