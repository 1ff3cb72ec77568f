# Export and generate of a QLoRA checkpoint (model.quantize=nf4), checked with bitsandbytes, transformers and peft
# (check_qlora_export.py; skipped, 77, without them): the checkpoint's model is rebuilt over its 4-bit base, so
# checkpoint_logits (the model `generate` and `export` build) is the 4-bit model; `--export.merge=true` writes
# bnb's dequantize(quantize(W)) + s*B*A in fp32 and bf16, not W + s*B*A; the GGUF export holds the merged HF
# export's tensors; the PEFT adapter gives ranktune's logits in peft over a base transformers loads 4-bit.
# model.quantize=nf4 without lora.r is refused by train only. A bitsandbytes 4-bit directory, sharded with a linear
# cut between shards, generates (loaded 4-bit, its linears read from both shards).
source "$(dirname "$0")/lib.sh"
: "${RANKTUNE_LOGITS_BIN:?run through ctest}"
CHECK=(python3 "$RANKTUNE_SOURCE/tests/integration/check_qlora_export.py")
EXPORT=(python3 "$RANKTUNE_SOURCE/tests/integration/check_export.py")
"${CHECK[@]}" deps || exit 77
read -r -a TOKENS <<<"$("${EXPORT[@]}" tokens)"
check() {  # check WHAT check_qlora_export.py ARGS...
  local what=$1; shift
  "${CHECK[@]}" "$@" && ok "$what" || fail "$what"
}

"${EXPORT[@]}" base "$WORK/base" >/dev/null 2>&1 || { fail "check_export.py base"; finish; exit; }
CKPT="$WORK/run/checkpoints"
run train 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 \
  --train.warmup_steps=1 --train.seq_len=32 --train.micro_batch=2 --train.eval_every=0 --train.log_every=1 \
  --train.steps=3 --checkpoint.every_steps=0 --model.path="$WORK/base" --data.tokenizer=byte \
  --model.quantize=nf4 --lora.r=8 --lora.alpha=16 --train.lr=2e-2 --output_dir="$WORK/run"
expect train out "base: decoder linears in NF4"
"$RANKTUNE_LOGITS_BIN" "$CKPT" "$WORK/ref.f32" "${TOKENS[@]}" >/dev/null && ok "ranktune logits" \
  || fail "checkpoint_logits"

run merged32 0 "$RANKTUNE_BIN" export "$CKPT" "$WORK/m32" --export.merge=true --export.dtype=fp32
expect merged32 out "LoRA merged into the dequantized NF4 base $WORK/base"
run merged16 0 "$RANKTUNE_BIN" export "$CKPT" "$WORK/m16" --export.merge=true
run adapter 0 "$RANKTUNE_BIN" export "$CKPT" "$WORK/adapter" --export.dtype=fp32
expect adapter out "trained over its 4-bit NF4 base"
check "merged exports: bnb's dequant(quant(W)) + s*B*A (fp32 and bf16), logits of the 4-bit model" \
  merged "$WORK/m32" "$WORK/m16" "$WORK/adapter" "$WORK/base" "$WORK/ref.f32" "${TOKENS[@]}"
check "PEFT adapter on a base transformers + bitsandbytes load 4-bit: ranktune's logits (1e-4)" \
  peft "$WORK/adapter" "$WORK/base" "$WORK/ref.f32" "${TOKENS[@]}"
GGUF=(python3 "$RANKTUNE_SOURCE/tests/integration/check_gguf.py")
if "${GGUF[@]}" deps >/dev/null; then
  run gguf 0 "$RANKTUNE_BIN" export "$CKPT" "$WORK/m.gguf" --export.format=gguf --export.dtype=fp32
  expect gguf out "LoRA merged into the dequantized NF4 base"
  "${GGUF[@]}" tensors "$WORK/m.gguf" fp32 "$WORK/m32" && ok "GGUF: every tensor equals the merged fp32 export's" \
    || fail "GGUF tensors"
else
  echo "skip: the GGUF part needs the gguf package"
fi

# generate and export read the model from the checkpoint: model.quantize=nf4 without lora.r is not theirs to refuse.
run generate 0 "$RANKTUNE_BIN" generate "$CKPT" --device=cpu --generate.prompt="Once" --generate.max_new_tokens=3 \
  --model.quantize=nf4
expect generate out "LoRA r=8 on the 4-bit NF4 $WORK/base"
expect generate out "generated 3 tokens"
run export_nf4 0 "$RANKTUNE_BIN" export "$CKPT" "$WORK/m16b" --export.merge=true --model.quantize=nf4
cmp -s "$WORK/m16/model.safetensors" "$WORK/m16b/model.safetensors" && ok "the same export with model.quantize=nf4" \
  || fail "export with model.quantize=nf4 differs"
run train_nf4 2 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu \
  --model.quantize=nf4 --output_dir="$WORK/refused"
expect train_nf4 err "model.quantize=nf4 needs LoRA (lora.r > 0)"

# A "...-bnb-4bit" directory (transformers + bitsandbytes, CPU), in two shards that cut layer 0's q_proj.
if "${CHECK[@]}" bnb "$WORK/base" "$WORK/bnb" >"$WORK/bnb.log" 2>&1; then
  run generate_bnb 0 "$RANKTUNE_BIN" generate "$WORK/bnb" --device=cpu --data.tokenizer=byte \
    --generate.prompt="Once" --generate.max_new_tokens=3
  expect generate_bnb out "(bitsandbytes 4-bit NF4)"
  expect generate_bnb out "generated 3 tokens"
else
  fail "check_qlora_export.py bnb"; sed 's/^/    /' "$WORK/bnb.log" | tail -20
fi
finish
