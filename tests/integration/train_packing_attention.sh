#!/usr/bin/env bash
# data.packing_attention end to end: on short documents packed several to a row, isolated (the default) and shared
# attention train with different losses and the log says which one ran; on documents that fill a row alone, the
# two are the same computation (no mask is built), so their losses are bit-identical; an unknown value is refused.
source "$(dirname "$0")/lib.sh"

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
words = ["red", "blue", "cat", "dog", "sun", "rain", "tree", "lake", "bird", "stone"]
with open(f"{work}/short.jsonl", "w") as f:  # 12-30 bytes: 2-5 documents in a row of 64
    for i in range(600):
        f.write(json.dumps({"text": " ".join(words[(i * k) % 10] for k in range(1, 3 + i % 4))}) + "\n")
with open(f"{work}/long.jsonl", "w") as f:  # 63 bytes + bos/eos: longer than a row, one document's piece per row
    for i in range(300):
        f.write(json.dumps({"text": (" ".join(words[(i + k) % 10] for k in range(20)))[:63]}) + "\n")
PY

shape=(--device=cpu --seed=3 --data.tokenizer=byte --model.hidden_size=32 --model.num_layers=2 --model.num_heads=4
       --model.num_kv_heads=2 --model.intermediate_size=64 --model.max_seq_len=64 --train.seq_len=64
       --train.micro_batch=4 --train.steps=4 --train.warmup_steps=0 --train.log_every=1 --train.eval_every=0
       --checkpoint.at_end=false)
train() {  # train NAME DATA [ARGS...]
  run "$1" 0 "$RANKTUNE_BIN" train "${shape[@]}" --data.path="$WORK/$2.jsonl" --output_dir="$WORK/$1" \
    --checkpoint.dir="$WORK/$1.ckpt" "${@:3}"
  losses "$WORK/$1" >"$WORK/$1.loss"
}

train short_iso short
expect short_iso out "packed documents attend only to themselves (data.packing_attention=isolated)"
train short_shared short --data.packing_attention=shared
expect short_shared out "packed documents attend to the earlier ones in their row (data.packing_attention=shared)"
[ "$(wc -l <"$WORK/short_iso.loss")" = 4 ] && ! cmp -s "$WORK/short_iso.loss" "$WORK/short_shared.loss" \
  && ok "short documents: isolated and shared train with different losses" \
  || { fail "short documents: the losses do not differ"; paste "$WORK/short_iso.loss" "$WORK/short_shared.loss"; }

train long_iso long
train long_shared long --data.packing_attention=shared
[ "$(wc -l <"$WORK/long_iso.loss")" = 4 ] && cmp -s "$WORK/long_iso.loss" "$WORK/long_shared.loss" \
  && ok "one document per row: isolated and shared losses are bit-identical" \
  || { fail "one document per row: the losses differ"; paste "$WORK/long_iso.loss" "$WORK/long_shared.loss"; }

run bogus 2 "$RANKTUNE_BIN" train "${shape[@]}" --data.path="$WORK/short.jsonl" --data.packing_attention=none \
  --output_dir="$WORK/bogus"
expect bogus err "data.packing_attention"
finish
