# `ranktune export --export.format=gguf`, read back by the gguf package (llama.cpp's gguf-py; check_gguf.py, skipped
# with 77 without it): every tensor equals the HF export of the same checkpoint (bf16/fp16 bit for bit once the Q/K
# rows are put back, q8_0 byte for byte with gguf's own quantizer), the metadata llama.cpp's loader requires, and the
# tokenizer. Models: the tiny default job (random init, byte tokenizer, tied embeddings, 688-wide MLP rows that Q8_0
# cannot hold); LoRA over a transformers-made Llama with llama3 rope scaling, a BPE tokenizer.json and a chat
# template (merged first); Qwen2 (q/k/v biases, no permutation) and Mistral (sliding window) full fine-tunes. Then
# the refusals. llama.cpp itself is not built here (docs/models.md says why).
source "$(dirname "$0")/lib.sh"
CHECK=(python3 "$RANKTUNE_SOURCE/tests/integration/check_gguf.py")
"${CHECK[@]}" deps || exit 77
ARGS=(--device=cpu --seed=3 --train.warmup_steps=1 --train.seq_len=32 --train.micro_batch=2 --train.eval_every=0
  --train.log_every=1 --checkpoint.every_steps=0)
train() {  # train NAME STEPS EXTRA...: a run into $WORK/NAME, checkpoints in $WORK/NAME/ckpt
  local name=$1 steps=$2; shift 2
  run "train_$name" 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.steps="$steps" --output_dir="$WORK/$name" \
    --checkpoint.dir="$WORK/$name/ckpt" "$@"
}
check() {  # check WHAT check_gguf.py ARGS...
  local what=$1; shift
  "${CHECK[@]}" "$@" && ok "$what" || fail "$what"
}
exports() {  # exports NAME HF_DTYPES GGUF_DTYPES: HF exports $WORK/NAME_hf_D, GGUF exports $WORK/NAME_D.gguf
  local name=$1 d
  for d in $2; do run "export_${name}_hf_$d" 0 "$RANKTUNE_BIN" export "$WORK/$name/ckpt" "$WORK/${name}_hf_$d" \
    --export.dtype="$d" --export.merge=true; done
  for d in $3; do run "export_${name}_$d" 0 "$RANKTUNE_BIN" export "$WORK/$name/ckpt" "$WORK/${name}_$d.gguf" \
    --export.format=gguf --export.dtype="$d"; done
}

# The tiny default job, 2 steps.
train tiny 2 --config "$RANKTUNE_SOURCE/configs/tiny.ini"
exports tiny "fp32 bf16 fp16" "bf16 fp16 q8_0"
expect export_tiny_q8_0 out "4 matrices as F16: their rows are not whole Q8_0 blocks of 32"
same() { [ "$1" != q8_0 ] && echo "$WORK/$2_hf_$1"; }  # the HF export in a GGUF dtype (none for q8_0)
for d in bf16 fp16 q8_0; do
  check "tiny $d: every tensor equals the HF export's" tensors "$WORK/tiny_$d.gguf" $d "$WORK/tiny_hf_fp32" \
    $(same $d tiny)
  check "tiny $d: llama.cpp's metadata keys, types and values" meta "$WORK/tiny_$d.gguf" $d "$WORK/tiny_hf_fp32"
done
check "tiny: the byte tokenizer as GPT-2 byte symbols" vocab "$WORK/tiny_bf16.gguf" byte

# LoRA over a transformers-made Llama (llama3 rope, its own tokenizer.json and chat template): merged into the base.
"${CHECK[@]}" bases "$WORK/bases" >/dev/null 2>&1 && ok "bases written by transformers" || fail "bases"
train lora 2 --model.path="$WORK/bases/llama" --lora.r=4 --lora.alpha=8 --train.lr=1e-2
exports lora "fp32 bf16 fp16" "bf16 fp16 q8_0"
expect export_lora_bf16 out "LoRA merged into $WORK/bases/llama"
for d in bf16 fp16 q8_0; do
  check "LoRA $d: every tensor equals the merged HF export's" tensors "$WORK/lora_$d.gguf" $d "$WORK/lora_hf_fp32" \
    $(same $d lora)
  check "LoRA $d: metadata, rope_freqs of llama3 scaling" meta "$WORK/lora_$d.gguf" $d "$WORK/lora_hf_fp32"
done
check "LoRA: the base's tokenizer as AutoTokenizer has it, with its chat template" \
  vocab "$WORK/lora_bf16.gguf" "$WORK/bases/llama"

# Qwen2 and Mistral full fine-tunes, in fp32 (the matrices then equal the fp32 HF export's).
for arch in qwen2 mistral; do
  train "$arch" 1 --model.path="$WORK/bases/$arch"
  exports "$arch" fp32 fp32
  check "$arch: every tensor equals the HF export's" tensors "$WORK/${arch}_fp32.gguf" fp32 "$WORK/${arch}_hf_fp32"
  check "$arch: metadata" meta "$WORK/${arch}_fp32.gguf" fp32 "$WORK/${arch}_hf_fp32"
done
expect export_mistral_fp32 out "context_length 128: the sliding window"

# Refusals: exit 2, one error line with a hint, nothing left behind.
run exists 2 "$RANKTUNE_BIN" export "$WORK/tiny/ckpt" "$WORK/tiny_bf16.gguf" --export.format=gguf
expect exists err "--export.overwrite=true"
run overwrite 0 "$RANKTUNE_BIN" export "$WORK/tiny/ckpt" "$WORK/tiny_bf16.gguf" --export.format=gguf \
  --export.overwrite=true --export.dtype=fp16
check "overwrite replaced the file" meta "$WORK/tiny_bf16.gguf" fp16 "$WORK/tiny_hf_fp32"
run to_dir 2 "$RANKTUNE_BIN" export "$WORK/tiny/ckpt" "$WORK/tiny_hf_fp32" --export.format=gguf
expect to_dir err "is a directory, but a GGUF export is one file"
run q8_hf 2 "$RANKTUNE_BIN" export "$WORK/tiny/ckpt" "$WORK/x1" --export.dtype=q8_0
expect q8_hf err "add --export.format=gguf"
run gguf_name_hf 2 "$RANKTUNE_BIN" export "$WORK/tiny/ckpt" "$WORK/x2.gguf"
expect gguf_name_hf err "export.format=hf writes a directory"
SHAPE=(--model.num_layers=1 --model.hidden_size=64 --model.num_heads=4 --model.num_kv_heads=2
  --model.intermediate_size=128)
train lora_random 1 "${SHAPE[@]}" --lora.r=4
run lora_random 2 "$RANKTUNE_BIN" export "$WORK/lora_random/ckpt" "$WORK/x3.gguf" --export.format=gguf
expect lora_random err "--model.path"
train prefix_space 1 "${SHAPE[@]}" --model.vocab_size=900 \
  --data.tokenizer="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers/gpt2_prefix_space.tokenizer.json"
run prefix_space 2 "$RANKTUNE_BIN" export "$WORK/prefix_space/ckpt" "$WORK/x4.gguf" --export.format=gguf
expect prefix_space err "add_prefix_space=true, which llama.cpp's tokenizers cannot reproduce"
[ ! -e "$WORK/x1" ] && [ ! -e "$WORK/x2.gguf" ] && [ ! -e "$WORK/x3.gguf" ] && [ ! -e "$WORK/x4.gguf" ] \
  && ok "refused exports leave nothing behind" || fail "a refused export left a file"
compgen -G "$WORK/*.gguf.tmp.*" >/dev/null && fail "temporary GGUF files left" || ok "no temporary files left"
finish
