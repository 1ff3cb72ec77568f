# A model directory brings its own tokenizer (#15 point 1): with model.path and no --data.tokenizer, `prepare`,
# `train` and `generate` use DIR/tokenizer.json (and its tokenizer_config.json), say so, and the rows hold its ids
# (checked against transformers' AutoTokenizer of the directory); a tokenizer that does not fit the model's
# config.json is refused naming both files; the byte tokenizer over a pretrained model only when asked for, with a
# warning; a directory without tokenizer.json is refused with the fixes. Also (#15 point 7): checkpoints follow
# --output_dir, and the effective configuration shows the model directory's shape with its source, then what was built.
source "$(dirname "$0")/lib.sh"
CHECK=(python3 "$RANKTUNE_SOURCE/tests/integration/check_export.py")
"${CHECK[@]}" deps || exit 77
cd "$WORK" || exit 1
"${CHECK[@]}" hfbase "$WORK/hub" >/dev/null 2>&1 && ok "Hub-style base written by transformers" || fail "Hub-style base"
HUB=$WORK/hub
TEXT="Dara lives in a small house by the sea; she reads in the evening."
python3 -c 'import json, sys; open(sys.argv[1], "w").write("".join(json.dumps({"text": t}) + "\n"
                                                            for t in sys.argv[2:] * 20))' \
  "$WORK/text.jsonl" "$TEXT" "the quick brown fox jumps over the lazy dog."
BASE=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.seq_len=32 --train.micro_batch=2 --train.steps=1
  --train.warmup_steps=0 --train.eval_every=0)
ARGS=("${BASE[@]}" --data.path="$WORK/text.jsonl" --lora.r=8)
OWN="tokenizer: hf-bpe byte-level (300) from $HUB/tokenizer.json; the model's own (data.tokenizer=auto)"

# prepare: the model's tokenizer by default; the rows are its ids.
run prepare 0 "$RANKTUNE_BIN" prepare "${ARGS[@]}" --model.path="$HUB" --prepare.output="$WORK/rows.h5"
expect prepare out "$OWN"
"${CHECK[@]}" prepared "$WORK/rows.h5" "$HUB" "$TEXT" && ok "prepared rows are AutoTokenizer($HUB)'s ids" \
  || fail "prepared rows are not the model tokenizer's ids"

# train: the same tokenizer, on text and on the prepared rows (whose tokenizer it matches); no --checkpoint.dir, so
# the checkpoints go under --output_dir, not under the INI's run directory.
run train 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --model.path="$HUB" --output_dir="$WORK/run"
expect train out "$OWN"
[ -f "$WORK/run/checkpoints/latest" ] && [ ! -e "$WORK/runs" ] && ok "checkpoints under --output_dir/checkpoints" \
  || fail "checkpoints not under $WORK/run/checkpoints ($(ls "$WORK" | tr '\n' ' '))"
# row NAME KEY VALUE SOURCE: the effective-configuration table of run NAME shows KEY = VALUE from SOURCE.
row() {
  if awk -v k="$2" -v v="$3" -v s="$4" '$1 == k && $2 == v && index($0, s) { found = 1 } END { exit !found }' \
    "$WORK/$1.out"; then
    ok "$1: table row $2 = $3 ($4)"
  else
    fail "$1: no table row $2 = $3 ($4)"; grep -F "$2 " "$WORK/$1.out" | head -2
  fi
}
row train model.hidden_size 64 "$HUB/config.json ($RANKTUNE_SOURCE/configs/tiny.ini:11 ignored)"
row train model.vocab_size 320 "$HUB/config.json"
row train model.rope_theta 10000 "$HUB/config.json"
row train checkpoint.dir "$WORK/run/checkpoints" default
expect train out "model: llama from $HUB/config.json: 2 layers, hidden 64, 4 heads of 16, 2 kv heads, intermediate \
128, vocab 320"
expect train out "trainable: LoRA r=8, alpha 16, dropout 0 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj: \
16384 parameters"
run train_prepared 0 "$RANKTUNE_BIN" train "${BASE[@]}" --lora.r=8 --model.path="$HUB" --data.path="$WORK/rows.h5" \
  --output_dir="$WORK/run_prepared"

# Refusals (exit 2, before any text is read): a tokenizer larger than the model's vocabulary; the model's own tokenizer
# against a config.json with another eos; a directory without tokenizer.json, for train, prepare and generate.
GPT2="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers/gpt2.tokenizer.json"
run too_big 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --model.path="$HUB" --data.tokenizer="$GPT2" --output_dir="$WORK/x1"
expect too_big err "tokenizer $GPT2 has 900 tokens, more than vocab_size 320 in $HUB/config.json"
expect too_big err "hint: use the model's own tokenizer (data.tokenizer=auto reads $HUB/tokenizer.json)"
cp -r "$HUB" "$WORK/other_eos"
python3 - "$WORK/other_eos" <<'PY'
import json, sys
for name in ("config.json", "generation_config.json"):
    p = f"{sys.argv[1]}/{name}"; c = json.load(open(p)); c["eos_token_id"] = 5; json.dump(c, open(p, "w"))
PY
run other_eos 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --model.path="$WORK/other_eos" --output_dir="$WORK/x2"
expect other_eos err "tokenizer $WORK/other_eos/tokenizer.json (special tokens from \
$WORK/other_eos/tokenizer_config.json) has eos id 2 ('</s>') but $WORK/other_eos/config.json"
expect other_eos err "has eos_token_id 5"
mkdir "$WORK/bare" && cp "$HUB/config.json" "$HUB/model.safetensors" "$WORK/bare/"
for cmd in train prepare generate; do
  extra=(--output_dir="$WORK/x3" --model.path="$WORK/bare")
  [ "$cmd" = prepare ] && extra+=(--prepare.output="$WORK/x3.h5")
  [ "$cmd" = generate ] && extra=("$WORK/bare" --generate.prompt=hello --device=cpu)
  [ "$cmd" = generate ] && run "bare_$cmd" 2 "$RANKTUNE_BIN" generate "${extra[@]}" \
    || run "bare_$cmd" 2 "$RANKTUNE_BIN" "$cmd" "${ARGS[@]}" "${extra[@]}"
  expect "bare_$cmd" err "the model directory $WORK/bare has no tokenizer.json, and data.tokenizer=auto uses the \
model's own tokenizer"
  expect "bare_$cmd" err "--data.tokenizer=PATH"
done
[ ! -e "$WORK/x1" ] && [ ! -e "$WORK/x2" ] && [ ! -e "$WORK/x3.h5" ] && ok "refused runs wrote nothing" \
  || fail "a refused run wrote output"

# The byte tokenizer over the pretrained model: only by name, with a warning on stderr (once, rank 0).
run byte 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --model.path="$HUB" --data.tokenizer=byte --output_dir="$WORK/byte"
expect byte out "tokenizer: byte (259); data.tokenizer=byte"
expect byte err "warning: the byte tokenizer (ids 0-258) over the pretrained model $HUB"
lines byte err "warning:" 1
lines train err "warning:" 0
# No model directory: the byte tokenizer, as before, without a warning.
run random 0 "$RANKTUNE_BIN" train "${BASE[@]}" --data.path="$WORK/text.jsonl" --model.num_layers=1 \
  --output_dir="$WORK/random"
expect random out "tokenizer: byte (259); data.tokenizer=auto without a model directory"
expect random out "model: llama from random init (the [model] keys, seed 1234): 1 layers, hidden 256"
expect random out "trainable: every parameter (full fine-tune)"
lines random err "warning:" 0
finish
