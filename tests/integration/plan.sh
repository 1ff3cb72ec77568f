# `ranktune plan` on budgets given by hand (no GPU needed): the table, accelerate's placement, and a refusal with
# the numbers and what to change when the model cannot fit.
source "$(dirname "$0")/lib.sh"
llama3_8b=(--model.hidden_size=4096 --model.num_layers=32 --model.num_heads=32 --model.num_kv_heads=8
  --model.intermediate_size=14336 --model.vocab_size=128256 --model.tie_embeddings=false --model.max_seq_len=8192
  --train.seq_len=2048 --train.micro_batch=1)

run plan2 0 "$RANKTUNE_BIN" plan "${llama3_8b[@]}" --parallel.max_memory=0:80GiB,1:80GiB \
  --train.activation_checkpointing=true --parallel.micro_batches=8
expect plan2 out "cuda:0  embed .. layer"
expect plan2 out "layer"
expect plan2 out " .. head"
expect plan2 out "predicted 1.7"
expect plan2 out "cuda:0  embed + 14 layer(s)"
expect plan2 out "cuda:1  18 layer(s) + head"

run too_big 7 "$RANKTUNE_BIN" plan "${llama3_8b[@]}" --parallel.max_memory=0:40GiB
expect too_big err "the model does not fit: training needs"
expect too_big err "--lora.r=16"

run bad_budget 2 "$RANKTUNE_BIN" plan --parallel.max_memory=0=40GiB
expect bad_budget err "needs DEVICE:SIZE"

run no_gpu 4 env CUDA_VISIBLE_DEVICES= "$RANKTUNE_BIN" plan
expect no_gpu err "--parallel.max_memory=0:80GiB,1:80GiB"
# A Hugging Face model directory: the shape comes from its config.json (2 layers, d 64, vocab 96).
run hf_dir 0 "$RANKTUNE_BIN" plan --model.path="$RANKTUNE_SOURCE/tests/reference/fixtures/llama_gqa_untied" \
  --parallel.max_memory=0:1GiB,1:1GiB
expect hf_dir out "model: 2 layers, d 64"
finish
