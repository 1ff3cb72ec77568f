# `ranktune prepare` end to end: a malformed JSONL line is an error naming file:line (exit 2) or, with
# --data.on_bad_record=skip, skipped and counted; h5py reads the layout (check_prepared.py: attributes, dtypes,
# Fletcher32, pre-shifted targets, position resets, masked prompts); shards hold the same rows as one file; 2 ranks
# write the same file; a wrong row length, another tokenizer and a damaged file are refused; and training on the .h5
# (one file or shards, 1 and 2 ranks) logs the same losses as training on the same text directly.
source "$(dirname "$0")/lib.sh"

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
people = [("Ada", "Oslo", "teal"), ("Bo", "Lima", "red"), ("Cy", "Kyiv", "gold"), ("Di", "Rome", "blue")]
recs = []
for i in range(160):
    name, city, colour = people[i % 4]
    recs.append({"text": f"{name} lives in {city}. {name} likes {colour}. {i} plus {i % 7} is {i + i % 7}."})
    if i == 40:
        recs.append({"messages": [{"role": "user", "content": "Where does Ada live?"},
                                  {"role": "assistant", "content": "Ada lives in Oslo."}]})
    if i == 90:
        recs.append({"prompt": "Q: What colour is the sky?\nA: ", "response": "Blue."})
    if i == 120:
        recs.append({"text": "long " * 40})  # 200 bytes: longer than a row of 64, split or truncated
lines = [json.dumps(r) for r in recs]
open(f"{work}/good.jsonl", "w").write("\n".join(lines) + "\n")
bad = lines[:4] + ['{"text": "unterminated'] + lines[4:]  # line 5
open(f"{work}/bad.jsonl", "w").write("\n".join(bad) + "\n")
PY

CHECK="$RANKTUNE_SOURCE/tests/integration/check_prepared.py"
run bad 2 "$RANKTUNE_BIN" prepare --data.path="$WORK/bad.jsonl" --train.seq_len=64 --prepare.output="$WORK/bad.h5"
expect bad err "$WORK/bad.jsonl:5"
expect bad err "--data.on_bad_record=skip"
[ ! -e "$WORK/bad.h5" ] && ! ls "$WORK"/bad.h5.tmp.* >/dev/null 2>&1 && ok "no output left by the failed prepare" \
  || fail "the failed prepare left a file behind"

run skip 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/bad.jsonl" --train.seq_len=64 --prepare.output="$WORK/skip.h5" \
  --data.on_bad_record=skip
expect skip out "1 skipped"
expect skip out "skipped 1 bad record(s); first: $WORK/bad.jsonl:5"
run check_skip 0 python3 "$CHECK" "$WORK/skip.h5" --skipped=1 --instruction

run one 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 --prepare.output="$WORK/one.h5"
expect one out "prepared $WORK/one.h5: 163 records"
expect one out "1 split"
expect one out "prepare 100%"
run check_one 0 python3 "$CHECK" "$WORK/one.h5" --instruction

# prepare.threads: records tokenized on several threads give the file of the runs above (prepare.threads=0: one
# thread per CPU, OMP_NUM_THREADS=1 under ctest), byte for byte, skips included.
run threads 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/threads.h5" --prepare.threads=3
expect threads out "3 thread(s) tokenizing"
cmp -s "$WORK/one.h5" "$WORK/threads.h5" && ok "3 threads write the file of the run above, byte for byte" \
  || fail "3 threads wrote another file than the run above"
run skip3 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/bad.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/skip3.h5" --data.on_bad_record=skip --prepare.threads=3
expect skip3 out "skipped 1 bad record(s); first: $WORK/bad.jsonl:5"
cmp -s "$WORK/skip.h5" "$WORK/skip3.h5" && ok "3 threads skip as the run above does, byte for byte" \
  || fail "3 threads wrote another file than the run above when skipping"

run shards 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/shards" --prepare.shard_rows=16
run check_shards 0 python3 "$CHECK" "$WORK/shards" --same-as="$WORK/one.h5" --shards=11
[ -f "$WORK/shards/shard-00000.h5" ] && [ -f "$WORK/shards/shard-00001.h5" ] && ok "shard files written" \
  || fail "no shard files"

run trunc 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/trunc.h5" --data.overlong=truncate
expect trunc out "1 truncated, 0 split"

run nodir 2 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/none/x.h5"
expect nodir err "directory '$WORK/none' does not exist"

# Rows longer than model.max_seq_len (256 by default) are refused with the fix in the hint (#15), and the fix works.
run long_rows 2 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=300 \
  --prepare.output="$WORK/long.h5"
expect long_rows err "train.seq_len (300) exceeds model.max_seq_len (256)"
expect long_rows err "hint: set --model.max_seq_len=300 (or more) as well, or lower --train.seq_len"
run long_rows_fixed 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=300 \
  --model.max_seq_len=300 --prepare.output="$WORK/long.h5"

# Under mpirun the ranks share the tokenizing (prepare_mpi.sh checks it at length): the file of one process.
run ranks2 0 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" prepare --data.path="$WORK/good.jsonl" --train.seq_len=64 \
  --prepare.output="$WORK/ranks2.h5"
cmp -s "$WORK/one.h5" "$WORK/ranks2.h5" && ok "2 ranks write the file of one process" \
  || fail "2 ranks wrote another file than one process"

# Training: a small model, 8 steps of a global batch of 4 rows, losses from metrics.jsonl.
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=5 --train.log_every=1 --train.steps=8
  --train.warmup_steps=2 --model.num_layers=2 --model.hidden_size=128 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=256 --train.eval_every=0 --checkpoint.every_steps=0)
train() {  # train NAME RANKS DATA EXTRA...
  local name=$1 n=$2 data=$3; shift 3
  run "$name" 0 "${MPIRUN[@]}" "$n" "$RANKTUNE_BIN" train "${ARGS[@]}" --train.seq_len=64 --data.path="$data" \
    --output_dir="$WORK/$name" --checkpoint.dir="$WORK/$name/ckpt" "$@"
  losses "$WORK/$name" >"$WORK/$name.loss"
}
train text 1 "$WORK/good.jsonl" --train.micro_batch=4
train h5 1 "$WORK/one.h5" --train.micro_batch=4
train shard 1 "$WORK/shards" --train.micro_batch=4
train h5_np2 2 "$WORK/one.h5" --train.micro_batch=2
expect h5 out "data: $WORK/one.h5 (prepared from 1 file(s), 163 records)"
[ "$(wc -l <"$WORK/text.loss")" = 8 ] && ok "8 logged steps" || fail "expected 8 logged steps: $(cat "$WORK/text.loss")"
cmp -s "$WORK/text.loss" "$WORK/h5.loss" && ok "the .h5 trains with exactly the losses of the text" \
  || { fail "losses differ between text and .h5"; paste "$WORK/text.loss" "$WORK/h5.loss"; }
cmp -s "$WORK/h5.loss" "$WORK/shard.loss" && ok "shards train with exactly the losses of one file" \
  || fail "losses differ between one file and shards"
python3 - "$WORK/h5.loss" "$WORK/h5_np2.loss" <<'PY' && ok "2 ranks on the .h5 match one process (1e-5 relative)" \
  || fail "2 ranks on the .h5 differ from one process"
import sys
a = [float(l.split()[1]) for l in open(sys.argv[1])]
b = [float(l.split()[1]) for l in open(sys.argv[2])]
assert len(a) == len(b) == 8, (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"  worst relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY

# Refusals: another row length, another tokenizer, a damaged file.
run seq 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.seq_len=32 --data.path="$WORK/one.h5" --output_dir="$WORK/seq"
expect seq err "holds rows of 64 tokens but train.seq_len is 32"
expect seq err "--train.seq_len=64"
tokjson="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers/gpt2.tokenizer.json"
run tok 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --data.path="$WORK/one.h5" --data.tokenizer="$tokjson" \
  --train.seq_len=64 --output_dir="$WORK/tok"
expect tok err "was tokenized with 'byte'"
expect tok err "--data.tokenizer=byte"
head -c 3000 "$WORK/one.h5" >"$WORK/cut.h5"
run cut 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.seq_len=64 --data.path="$WORK/cut.h5" --output_dir="$WORK/cut"
expect cut err "token dataset '$WORK/cut.h5'"
finish
