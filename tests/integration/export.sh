# `ranktune export` round trips, checked with transformers and peft (check_export.py; skipped, 77, without them).
# Reference logits are ranktune's own model as the checkpoint holds it (checkpoint_logits, a test tool). Tolerances:
# fp32 exports 1e-4 of the largest logit, bf16 exports 5e-2. Full fine-tune (bf16 training on CPU, so the fp32
# masters are what must be exported): HF model directory. LoRA over a transformers-made base: PEFT adapter and merged
# model. Then the refusals and their exit codes, and the run's tokenizer.json copied next to the weights. Last, a
# model directory as the Hub has them (tokenizer_config.json with a chat template, special_tokens_map.json,
# generation_config.json): its exports load in transformers with the base's special tokens and template, and stop
# generating where `ranktune generate` stops on the checkpoint.
source "$(dirname "$0")/lib.sh"
: "${RANKTUNE_LOGITS_BIN:?run through ctest}"
CHECK=(python3 "$RANKTUNE_SOURCE/tests/integration/check_export.py")
"${CHECK[@]}" deps || exit 77
read -r -a TOKENS <<<"$("${CHECK[@]}" tokens)"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 --train.warmup_steps=1
  --train.seq_len=32 --train.micro_batch=2 --train.eval_every=0 --train.log_every=1 --checkpoint.every_steps=0)
SHAPE=(--model.num_layers=2 --model.hidden_size=64 --model.num_heads=4 --model.num_kv_heads=2
  --model.intermediate_size=128)

train() {  # train NAME EXTRA...: a ${STEPS:-3}-step run into $WORK/NAME, checkpoints in $WORK/NAME/ckpt
  local name=$1; shift
  run "train_$name" 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.steps="${STEPS:-3}" --output_dir="$WORK/$name" \
    --checkpoint.dir="$WORK/$name/ckpt" "$@"
}
logits() {  # logits CHECKPOINT OUT.f32: ranktune's logits of TOKENS
  "$RANKTUNE_LOGITS_BIN" "$1" "$2" "${TOKENS[@]}" >/dev/null && ok "ranktune logits of $1" || fail "checkpoint_logits $1"
}
check() {  # check WHAT check_export.py ARGS...
  local what=$1; shift
  "${CHECK[@]}" "$@" && ok "$what" || fail "$what"
}

# Full fine-tune, trained in bf16 (fp32 masters in the optimizer state).
train full "${SHAPE[@]}" --train.precision=bf16
logits "$WORK/full/ckpt" "$WORK/full.f32"
run export_full32 0 "$RANKTUNE_BIN" export "$WORK/full/ckpt" "$WORK/full32" --export.dtype=fp32
expect export_full32 out "export: step 3 of"
check "full fp32: the exported tensors are the checkpoint's fp32 masters" \
  weights "$WORK/full32" "$WORK/full/ckpt/step_00000003/rank_00000.h5"
check "full fp32: transformers' logits equal ranktune's (1e-4)" logits full "$WORK/full32" "$WORK/full.f32" 1e-4
run export_full16 0 "$RANKTUNE_BIN" export "$WORK/full/ckpt/step_00000003" "$WORK/full16"
dtype_is() {  # dtype_is DIR DTYPE: config.json names DTYPE and model.safetensors holds it
  python3 - "$@" <<'PY'
import json, sys
from safetensors import safe_open
c = json.load(open(sys.argv[1] + "/config.json"))
named = c.get("torch_dtype", c.get("dtype"))
with safe_open(sys.argv[1] + "/model.safetensors", "pt") as f:
    held = {str(f.get_tensor(k).dtype) for k in f.keys()}
sys.exit(0 if named == sys.argv[2] and held == {"torch." + sys.argv[2]} else 1)
PY
}
dtype_is "$WORK/full16" bfloat16 && ok "default export is bf16" || fail "default export is not bf16"
check "byte-tokenizer run: AutoTokenizer of its export is the byte tokenizer, eos 257 in generation_config.json" \
  byte "$WORK/full32"
check "full bf16: transformers' logits near ranktune's (5e-2)" logits full "$WORK/full16" "$WORK/full.f32" 5e-2

# LoRA over a base made by transformers: the adapter for peft, and the merged model. The base has no tokenizer: the
# byte tokenizer is asked for by name (its vocabulary is the byte tokenizer's).
"${CHECK[@]}" base "$WORK/base" >/dev/null 2>&1 && ok "base model written by transformers" || fail "base model"
train lora --model.path="$WORK/base" --lora.r=4 --lora.alpha=8 --train.lr=1e-2 --data.tokenizer=byte
logits "$WORK/lora/ckpt" "$WORK/lora.f32"
run export_adapter 0 "$RANKTUNE_BIN" export "$WORK/lora/ckpt" "$WORK/adapter" --export.dtype=fp32
python3 - "$WORK/adapter" "$WORK/base" <<'PY' && ok "adapter_config.json as PEFT writes it" || fail "adapter_config.json"
import json, os, sys
from safetensors import safe_open
c = json.load(open(os.path.join(sys.argv[1], "adapter_config.json")))
want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "bias": "none",
        "fan_in_fan_out": False, "base_model_name_or_path": os.path.abspath(sys.argv[2]),
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
with safe_open(os.path.join(sys.argv[1], "adapter_model.safetensors"), "pt") as f:
    keys = set(f.keys())
assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in keys, sorted(keys)[:4]
assert len(keys) == 2 * 7 * 2, len(keys)
if bad:
    print(bad)
    sys.exit(1)
PY
check "LoRA: peft's logits on the base equal ranktune's (1e-4)" \
  logits peft "$WORK/adapter" "$WORK/lora.f32" 1e-4 --base "$WORK/base"
run export_merged 0 "$RANKTUNE_BIN" export "$WORK/lora/ckpt" "$WORK/merged" --export.dtype=fp32 --export.merge=true
check "LoRA merged: transformers' logits equal ranktune's (1e-4)" logits full "$WORK/merged" "$WORK/lora.f32" 1e-4

# Refusals: the documented codes (docs/exit-codes.md) and one error line with a hint. A LoRA run over a random base
# has no base directory to export against.
run no_args 2 "$RANKTUNE_BIN" export "$WORK/full/ckpt"
run missing 5 "$RANKTUNE_BIN" export "$WORK/nowhere" "$WORK/x1"
expect missing err "ranktune: hint:"
run not_ckpt 5 "$RANKTUNE_BIN" export "$WORK/base" "$WORK/x2"
run exists 2 "$RANKTUNE_BIN" export "$WORK/full/ckpt" "$WORK/full16"
expect exists err "--export.overwrite=true"
run overwrite 0 "$RANKTUNE_BIN" export "$WORK/full/ckpt" "$WORK/full16" --export.overwrite=true --export.dtype=fp32
dtype_is "$WORK/full16" float32 && ok "overwrite replaced the export" || fail "overwrite did not replace"
STEPS=1 train lora_random "${SHAPE[@]}" --lora.r=4
run lora_random 2 "$RANKTUNE_BIN" export "$WORK/lora_random/ckpt" "$WORK/x4"
expect lora_random err "--model.path"
cp -r "$WORK/full/ckpt/step_00000003" "$WORK/damaged"
python3 -c "
import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 0x40; open(p, 'wb').write(b)" \
  "$WORK/damaged/rank_00000.h5"
run damaged 5 "$RANKTUNE_BIN" export "$WORK/damaged" "$WORK/x3"
expect damaged err "crc32c"
[ ! -e "$WORK/x1" ] && [ ! -e "$WORK/x2" ] && [ ! -e "$WORK/x3" ] && [ ! -e "$WORK/x4" ] \
  && ok "refused exports leave nothing behind" || fail "a refused export left a directory"
compgen -G "$WORK/*.tmp.*" >/dev/null && fail "temporary export directories left" || ok "no temporary directories left"

# A run with a tokenizer.json: the export carries it.
TOK="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers/gpt2.tokenizer.json"
STEPS=1 train tok "${SHAPE[@]}" --data.tokenizer="$TOK" --model.vocab_size=50257
run export_tok 0 "$RANKTUNE_BIN" export "$WORK/tok/ckpt" "$WORK/tok_out"
cmp -s "$TOK" "$WORK/tok_out/tokenizer.json" && ok "tokenizer.json copied" || fail "tokenizer.json not copied"

# A Hub-style model directory. Full fine-tune over it (no --data.tokenizer: its own tokenizer) on one prompt/response
# pair, until the model answers "hello" with " world" and eos; LoRA over a copy without generation_config.json.
"${CHECK[@]}" hfbase "$WORK/hub" >/dev/null 2>&1 && ok "Hub-style base written by transformers" || fail "Hub-style base"
cp -r "$WORK/hub" "$WORK/hub_nogen" && rm "$WORK/hub_nogen/generation_config.json"
printf '{"prompt": "hello", "response": " world"}\n%.0s' {1..64} >"$WORK/hello.jsonl"
HELLO=(--data.path="$WORK/hello.jsonl" --train.lr=1e-2 --train.schedule=constant)
STEPS=40 train hub_full --model.path="$WORK/hub" "${HELLO[@]}"
expect train_hub_full out "tokenizer: hf-bpe byte-level (300) from $WORK/hub/tokenizer.json; the model's own"
run export_hub_full 0 "$RANKTUNE_BIN" export "$WORK/hub_full/ckpt" "$WORK/hub_full_out" --export.dtype=fp32
for f in tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json; do
  cmp -s "$WORK/hub/$f" "$WORK/hub_full_out/$f" && ok "full: $f copied from the base" || fail "full: $f not copied"
done
check "full: AutoTokenizer and config.json ids of the export are the base's" \
  hub "$WORK/hub_full_out" "$WORK/hub" --model
# ranktune generate stops on eos on the checkpoint and on the export after the same tokens; so does HF generate.
for src in ckpt out; do
  dir="$WORK/hub_full/ckpt"; [ "$src" = out ] && dir="$WORK/hub_full_out"
  run "gen_hub_$src" 0 "$RANKTUNE_BIN" generate "$dir" --generate.prompt=hello --generate.max_new_tokens=20 --device=cpu
done
n_ckpt=$(grep -ao 'generated [0-9]* tokens' "$WORK/gen_hub_ckpt.out")
n_out=$(grep -ao 'generated [0-9]* tokens' "$WORK/gen_hub_out.out")
[ -n "$n_ckpt" ] && [ "$n_ckpt" = "$n_out" ] && [ "$n_ckpt" != "generated 20 tokens" ] \
  && ok "ranktune generate stops at eos on the checkpoint and the export alike ($n_ckpt)" \
  || fail "ranktune generate: checkpoint '$n_ckpt', export '$n_out' (max 20)"
check "HF generate on the export stops at eos, after as many tokens as ranktune generate" \
  stops "$WORK/hub_full_out" hello 20 "$WORK/gen_hub_out.out"

STEPS=2 train hub_lora --model.path="$WORK/hub_nogen" --lora.r=4 "${HELLO[@]}"
run export_hub_adapter 0 "$RANKTUNE_BIN" export "$WORK/hub_lora/ckpt" "$WORK/hub_adapter"
check "adapter: AutoTokenizer of the adapter directory is the base's" hub "$WORK/hub_adapter" "$WORK/hub_nogen"
run export_hub_merged 0 "$RANKTUNE_BIN" export "$WORK/hub_lora/ckpt" "$WORK/hub_merged" --export.merge=true
expect export_hub_merged out "generation_config.json written"
check "merged, base without generation_config.json: one written with the base config.json's ids" \
  hub "$WORK/hub_merged" "$WORK/hub_nogen" --model
finish
