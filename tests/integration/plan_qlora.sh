# QLoRA around the real binary, no GPU needed: `ranktune plan` counts a 4-bit NF4 base (the 70B shape of
# docs/modes.md over two 40 GiB budgets, and the hint that names model.quantize=nf4 when a 16-bit base does not fit);
# a model directory whose quantization_config ranktune cannot load, or a bitsandbytes 4-bit one with
# --model.quantize=none, is refused at start naming the field; a resume over another model.quantize is refused both
# ways naming the key.
source "$(dirname "$0")/lib.sh"
llama70b=(--model.hidden_size=8192 --model.num_layers=80 --model.num_heads=64 --model.num_kv_heads=8
  --model.intermediate_size=28672 --model.vocab_size=128256 --model.tie_embeddings=false --model.max_seq_len=2048
  --train.seq_len=2048 --lora.r=16 --train.activation_checkpointing=true --parallel.mode=balanced)

run nf4_70b 0 "$RANKTUNE_BIN" plan "${llama70b[@]}" --train.micro_batch=1 --model.quantize=nf4 \
  --parallel.max_memory=0:40GiB,1:40GiB
expect nf4_70b out "LoRA r=16 on a 4-bit NF4 base"
expect nf4_70b out "training footprint on one device 43.7 GiB"
expect nf4_70b out "cuda:0  embed .. layer 40     41      18.8 GiB"
expect nf4_70b out "cuda:1  layer 41 .. head      39      18.0 GiB"

run bf16_70b 7 "$RANKTUNE_BIN" plan "${llama70b[@]}" --parallel.max_memory=0:78GiB,1:78GiB
expect bf16_70b err "training needs 161.4 GiB"
expect bf16_70b err "QLoRA: --model.quantize=nf4 (67.3 GiB in total)"

# Llama-3-8B QLoRA: the footprint by layers recomputing (train.activation_checkpointing_layers) and what one budget
# holds (78 GiB: checkpointing off; 15 GiB: 14 recomputing, 15.0 GiB planned, between 14.2 at 16 and 17.3 at 8);
# over 15 GiB without checkpointing the refusal's hint names the same 14 first; more layers than the model has is
# refused at start.
llama8b=(--model.hidden_size=4096 --model.num_layers=32 --model.num_heads=32 --model.num_kv_heads=8
  --model.intermediate_size=14336 --model.vocab_size=128256 --model.tie_embeddings=false --model.max_seq_len=2048
  --train.seq_len=2048 --train.micro_batch=2 --lora.r=16 --model.quantize=nf4)
run nf4_8b_ac 0 "$RANKTUNE_BIN" plan "${llama8b[@]}" --train.activation_checkpointing=true --parallel.max_memory=0:78GiB
expect nf4_8b_ac out "activation checkpointing: 32 of 32 layers recompute; the footprint on one device by --train.activation_checkpointing_layers: 0 (every layer) 7.9 GiB, 24 11.1 GiB, 16 14.2 GiB, 8 17.3 GiB; --train.activation_checkpointing=false 20.0 GiB; within the budget of 78.0 GiB: --train.activation_checkpointing=false"
run nf4_8b_ac15 0 "$RANKTUNE_BIN" plan "${llama8b[@]}" --train.activation_checkpointing=true --parallel.max_memory=0:15GiB
expect nf4_8b_ac15 out "; within the budget of 15.0 GiB: --train.activation_checkpointing_layers=14 at the fewest"
run nf4_8b_tight 7 "$RANKTUNE_BIN" plan "${llama8b[@]}" --parallel.max_memory=0:15GiB
expect nf4_8b_tight err "hint: any of: --train.activation_checkpointing=true --train.activation_checkpointing_layers=14 (15.0 GiB in total)"
expect nf4_8b_tight err "; --train.activation_checkpointing=true (7.9 GiB in total)"
run nf4_8b_over 2 "$RANKTUNE_BIN" plan "${llama8b[@]}" --train.activation_checkpointing=true \
  --train.activation_checkpointing_layers=33 --parallel.max_memory=0:78GiB
expect nf4_8b_over err "train.activation_checkpointing_layers=33 is more than the model's 32 layers"

# A bitsandbytes 4-bit directory (made by transformers + bitsandbytes) with its config.json edited.
BNB="$RANKTUNE_SOURCE/tests/reference/fixtures/bnb4_tiny"
quantized_dir() {  # quantized_dir NAME PYTHON-EDIT-OF-q
  mkdir -p "$WORK/$1" && cp "$BNB/model.safetensors" "$WORK/$1/"
  python3 - "$BNB/config.json" "$WORK/$1/config.json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
q = c["quantization_config"]
exec(sys.argv[3])
c["quantization_config"] = q
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
}
quantized_dir fp4 'q["bnb_4bit_quant_type"] = "fp4"'
run fp4 2 "$RANKTUNE_BIN" plan --model.path="$WORK/fp4" --lora.r=8 --parallel.max_memory=0:1GiB
expect fp4 err "$WORK/fp4/config.json: quantization_config.bnb_4bit_quant_type is \"fp4\": only nf4 is supported"
expect fp4 err "ranktune: hint:"
quantized_dir int8 'q["load_in_8bit"] = True; q["load_in_4bit"] = False'
run int8 2 "$RANKTUNE_BIN" train --model.path="$WORK/int8" --lora.r=8 --device=cpu
expect int8 err "load_in_8bit is true: 8-bit (LLM.int8) bitsandbytes checkpoints are not supported"
quantized_dir gptq 'q = {"quant_method": "gptq", "bits": 4, "group_size": 128}'
run gptq 2 "$RANKTUNE_BIN" plan --model.path="$WORK/gptq" --lora.r=8 --parallel.max_memory=0:1GiB
expect gptq err "quantization_config.quant_method \"gptq\""
# The directory as transformers saved it: planned in 4 bits without being told.
run bnb_plan 0 "$RANKTUNE_BIN" plan --model.path="$BNB" --lora.r=8 --parallel.max_memory=0:1GiB
expect bnb_plan out "model: 2 layers, d 64"
expect bnb_plan out "LoRA r=8 on a 4-bit NF4 base"
run bnb_none 2 "$RANKTUNE_BIN" plan --model.path="$BNB" --model.quantize=none --lora.r=8 --parallel.max_memory=0:1GiB
expect bnb_none err "holds bitsandbytes 4-bit NF4 weights"
expect bnb_none err "drop model.quantize"

# Resume over another base quantization: refused in both directions, naming the key.
TINY=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 --train.warmup_steps=1 --train.seq_len=32
  --train.micro_batch=2 --train.eval_every=0 --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=128 --lora.r=8 --checkpoint.every_steps=1)
run q_first 0 "$RANKTUNE_BIN" train "${TINY[@]}" --model.quantize=nf4 --train.steps=1 --output_dir="$WORK/q"
run q_to_16 2 "$RANKTUNE_BIN" train "${TINY[@]}" --train.steps=2 --output_dir="$WORK/q" --resume=auto
expect q_to_16 err "model.quantize was nf4 there, this run sets none"
run b_first 0 "$RANKTUNE_BIN" train "${TINY[@]}" --train.steps=1 --output_dir="$WORK/b"
run b_to_nf4 2 "$RANKTUNE_BIN" train "${TINY[@]}" --model.quantize=nf4 --train.steps=2 --output_dir="$WORK/b" \
  --resume=auto
expect b_to_nf4 err "model.quantize was none there, this run sets nf4"
expect b_to_nf4 err "resume with --model.quantize=none"
finish
