# The embedded default job (configs/tiny.ini, 200 steps on CPU): the held-out loss ends below 1.0 (it starts at
# ln(259) = 5.56 for the byte vocabulary), a sample is printed, metrics files are written; train.epochs sets the steps; `ranktune generate` reproduces the sample.
source "$(dirname "$0")/lib.sh"
RUN_TIMEOUT=400 run tiny 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --output_dir="$WORK/run" \
  --checkpoint.dir="$WORK/ckpt"
expect tiny out "step 200/200"
expect tiny out "sample: ["
held=$(sed -nE 's/^done: 200 steps, loss .* held-out loss ([0-9.]+)$/\1/p' "$WORK/tiny.out")
python3 -c "import sys; sys.exit(0 if float('${held:-99}') < 1.0 else 1)" && ok "held-out loss $held < 1.0" \
  || fail "held-out loss '${held}' not below 1.0"
[ -s "$WORK/run/metrics.jsonl" ] && [ -s "$WORK/run/metrics.csv" ] && ok "metrics written" || fail "metrics missing"
run ckpt_verify 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/ckpt"

# `ranktune generate` from the final checkpoint continues the sample's prompt exactly as the run's own greedy sample.
prompt=$(python3 -c 'import sys,re; t=open(sys.argv[1]).read(); print(re.search(r"^sample: \[(.*?)\]", t, re.M).group(1), end="")' "$WORK/tiny.out")
run gen 0 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt="$prompt" --generate.max_new_tokens=80 --device=cpu
python3 - "$WORK/tiny.out" "$WORK/gen.out" <<'PY' && ok "generate reproduces the run's greedy sample" || fail "generate differs from the sample"
import re, sys
run, gen = open(sys.argv[1]).read(), open(sys.argv[2]).read()
m = re.search(r"^sample: \[(.*?)\](.*?)\ndone: ", run, re.M | re.S)
g = re.search(r"^generate: .*?\n(.*)\ngenerated 80 tokens", gen, re.S)
assert m and g, "sample or generation missing"
print("  " + repr(g.group(1)[:70]))
sys.exit(0 if g.group(1) == m.group(1) + m.group(2) else 1)
PY
run gen_sampled 0 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt="$prompt" --generate.temperature=0.8 \
  --generate.top_p=0.9 --device=cpu
expect gen_sampled out "temperature 0.80, top-p 0.90"
run gen_noprompt 2 "$RANKTUNE_BIN" generate "$WORK/ckpt"
expect gen_noprompt err "no prompt"
# Epochs instead of steps (the command line wins over the file's train.steps): 0.02 passes over 2760 rows in global batches of 8 = ceil(0.02 x 345) = 7 steps.
run epochs 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.epochs=0.02 \
  --train.eval_every=0 --train.log_every=1 --output_dir="$WORK/run3" --checkpoint.dir="$WORK/ckpt3"
expect epochs out "= 7 steps"
expect epochs out "step 7/7"
run both 2 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.epochs=1 \
  --train.steps=5 --output_dir="$WORK/run4"
expect both err "train.steps (command line --train.steps) and train.epochs (command line --train.epochs) are both given"
finish
