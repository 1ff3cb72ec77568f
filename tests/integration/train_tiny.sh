# The embedded default job (configs/tiny.ini, 200 steps on CPU): the held-out loss ends below 1.0 (it starts at
# ln(259) = 5.56 for the byte vocabulary), a sample is printed, metrics files are written; train.epochs sets the steps.
# `ranktune generate` from the checkpoint, from its export as a Hugging Face directory (equal to transformers' greedy
# generate when transformers is importable) and from a LoRA checkpoint reproduces the runs' greedy samples; sampling
# is deterministic given the seed. The same job under mpirun -np 2 (40 steps): the loss falls, the replicas agree.
source "$(dirname "$0")/lib.sh"
RUN_TIMEOUT=400 run tiny 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --output_dir="$WORK/run" \
  --checkpoint.dir="$WORK/ckpt"
expect tiny out "step 200/200"
expect tiny out 'sample: prompt="'
held=$(sed -nE 's/^done: 200 steps, loss .* held-out loss ([0-9.]+)$/\1/p' "$WORK/tiny.out")
python3 -c "import sys; sys.exit(0 if float('${held:-99}') < 1.0 else 1)" && ok "held-out loss $held < 1.0" \
  || fail "held-out loss '${held}' not below 1.0"
[ -s "$WORK/run/metrics.jsonl" ] && [ -s "$WORK/run/metrics.csv" ] && ok "metrics written" || fail "metrics missing"
run ckpt_verify 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/ckpt"

# `ranktune generate` from the final checkpoint continues the sample's prompt exactly as the run's own greedy sample
# (sample_of.py unescapes the sample line: `sample: prompt="..." | continuation="..."`).
sample_of() { python3 "$RANKTUNE_SOURCE/tests/integration/sample_of.py" "$@"; }
prompt=$(sample_of "$WORK/tiny.out" prompt)
run gen 0 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt="$prompt" --generate.max_new_tokens=80 --device=cpu

# continuation NAME: what `ranktune generate` wrote after the prompt (bytes, to stdout), without the timing line.
continuation() {
  python3 - "$WORK/$1.out" <<'PY'
import re, sys
m = re.search(rb"^generate: [^\n]*\n(.*)\ngenerated \d+ tokens after", open(sys.argv[1], "rb").read(), re.S | re.M)
sys.stdout.buffer.write(m.group(1) if m else b"<no generation>")
PY
}
cmp -s <(sample_of "$WORK/tiny.out") <(continuation gen) && ok "generate reproduces the run's greedy sample" \
  || fail "generate differs from the sample"
# Sampling is deterministic given the seed: the same seed twice gives the same text, another seed another text; a
# top-p so small that only the most likely token survives gives the greedy text at temperature 1.
sampled() {  # sampled NAME ARGS...
  run "$1" 0 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt="$prompt" --generate.max_new_tokens=80 \
    --device=cpu "${@:2}"
}
sampled gen_sampled --generate.temperature=0.8 --generate.top_p=0.9
expect gen_sampled out "temperature 0.80, top-p 0.90, seed 1234"
sampled gen_sampled_again --generate.temperature=0.8 --generate.top_p=0.9
sampled gen_sampled_seed --generate.temperature=0.8 --generate.top_p=0.9 --seed=99
sampled gen_top_p_tiny --generate.temperature=1 --generate.top_p=0.001
cmp -s <(continuation gen_sampled) <(continuation gen_sampled_again) && ok "same seed, same sampled text" \
  || fail "same seed, different sampled text"
cmp -s <(continuation gen_sampled) <(continuation gen_sampled_seed) && fail "seed 99 sampled the same text as 1234" \
  || ok "another seed, another sampled text"
cmp -s <(continuation gen_sampled) <(continuation gen) && fail "temperature 0.8 sampled exactly the greedy text" \
  || ok "sampling at temperature 0.8 departs from greedy"
cmp -s <(continuation gen_top_p_tiny) <(continuation gen) && ok "top-p 0.001 keeps only the argmax: the greedy text" \
  || fail "top-p 0.001 differs from greedy"

# From a Hugging Face model directory: the final checkpoint exported in fp32 (config.json, model.safetensors; the byte
# tokenizer needs no tokenizer.json). Its greedy continuation is the run's sample, and transformers' own greedy
# generate on the same directory gives the same token ids (check_generate.py; skipped without transformers).
run export_hf 0 "$RANKTUNE_BIN" export "$WORK/ckpt" "$WORK/hf" --export.dtype=fp32
run gen_hf 0 "$RANKTUNE_BIN" generate "$WORK/hf" --generate.prompt="$prompt" --generate.max_new_tokens=80 --device=cpu
expect gen_hf out "generate: model directory $WORK/hf, tokenizer byte (259)"
cmp -s <(continuation gen_hf) <(continuation gen) && ok "generate from the HF directory gives the checkpoint's text" \
  || fail "generate from the HF directory differs from the checkpoint's"
python3 "$RANKTUNE_SOURCE/tests/integration/check_generate.py" "$WORK/hf" "$prompt" "$WORK/gen_hf.out" 80
case $? in
  0) ok "greedy token ids equal transformers' generate(do_sample=False)" ;;
  77) echo "skip: transformers comparison (not importable)" ;;
  *) fail "greedy token ids differ from transformers'" ;;
esac

# From a LoRA checkpoint: 5 LoRA steps over that directory, at a learning rate that moves the greedy text. generate
# rebuilds the base from model.path plus the adapters and must reproduce the LoRA run's own sample.
RUN_TIMEOUT=300 run lora 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu \
  --model.path="$WORK/hf" --lora.r=8 --train.steps=5 --train.warmup_steps=0 --train.lr=1e-2 --train.eval_every=0 \
  --output_dir="$WORK/lora_run" --checkpoint.dir="$WORK/lora_ckpt"
run gen_lora 0 "$RANKTUNE_BIN" generate "$WORK/lora_ckpt" --generate.prompt="$prompt" --generate.max_new_tokens=80 \
  --device=cpu
expect gen_lora out "LoRA r=8 on $WORK/hf"
cmp -s <(sample_of "$WORK/lora.out" prompt) <(sample_of "$WORK/tiny.out" prompt) \
  || fail "the LoRA run sampled another prompt"
cmp -s <(sample_of "$WORK/lora.out" continuation) <(sample_of "$WORK/tiny.out" continuation) \
  && fail "the adapters did not change the greedy text: this check would not see them"
cmp -s <(sample_of "$WORK/lora.out") <(continuation gen_lora) && ok "generate from the LoRA checkpoint reproduces its run's sample" \
  || fail "generate from the LoRA checkpoint differs from its run's sample"
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

# README's long-sequence line (activation checkpointing, offload, the tiled MLP) through the binary, LoRA: 8 x 128
# tokens in MLP slices of 100 rows give the losses of the whole MLP to rounding (the slices change only the summation
# order; with LoRA dropout they would draw other masks, see tests/model/test_tiled_mlp.cpp for their replay). And
# one of the layers recomputing (train.activation_checkpointing_layers=1), the others keeping their activations:
# the same losses.
for variant in whole:0:0 tiled:100:0 part:0:1; do
  IFS=: read -r name chunk layers <<<"$variant"
  run "long_$name" 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu \
    --train.steps=8 --train.log_every=1 --train.eval_every=0 --checkpoint.every_steps=0 --lora.r=8 \
    --train.activation_checkpointing=true --train.activation_offload=true --train.mlp_chunk_tokens="$chunk" \
    --train.activation_checkpointing_layers="$layers" --output_dir="$WORK/long_$name" --checkpoint.dir="$WORK/long_$name/ckpt"
done
expect long_whole out "activation checkpointing: every layer recomputes its forward in backward"
expect long_part out "activation checkpointing: 1 of 4 layers recompute their forward in backward (3;"
python3 - "$WORK/long_whole/metrics.jsonl" "$WORK/long_tiled/metrics.jsonl" <<'PY' && ok "tiled MLP: the losses of the whole MLP" || fail "tiled MLP: losses differ"
import json, sys
whole, tiled = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:])
print(f"  whole {whole[-1]:.6f}, tiled {tiled[-1]:.6f}")
sys.exit(0 if len(whole) == len(tiled) == 8 and all(abs(a - b) <= 1e-5 * abs(a) for a, b in zip(whole, tiled)) else 1)
PY
python3 - "$WORK/long_whole/metrics.jsonl" "$WORK/long_part/metrics.jsonl" <<'PY' && ok "one layer of four recomputing: the losses of all four" || fail "partial activation checkpointing: losses differ"
import json, sys
whole, part = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:])
print(f"  every layer {whole[-1]:.6f}, one layer {part[-1]:.6f}")
sys.exit(0 if len(whole) == len(part) == 8 and all(abs(a - b) <= 1e-6 * abs(a) for a, b in zip(whole, part)) else 1)
PY
# The same LoRA run with the frozen base's matmuls in FP8 (train.fp8_matmuls, emulated in fp32 on the CPU): the log
# says so, and every loss stays within 2% of the 16-bit run's; without LoRA the flag is refused.
run long_fp8 0 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu \
  --train.steps=8 --train.log_every=1 --train.eval_every=0 --checkpoint.every_steps=0 --lora.r=8 \
  --train.activation_checkpointing=true --train.activation_offload=true --train.fp8_matmuls=true \
  --output_dir="$WORK/long_fp8" --checkpoint.dir="$WORK/long_fp8/ckpt"
expect long_fp8 out "base matmuls: FP8 e4m3 with row-wise scales (train.fp8_matmuls)"
python3 - "$WORK/long_whole/metrics.jsonl" "$WORK/long_fp8/metrics.jsonl" <<'PY' && ok "FP8 base matmuls: within 2% of the 16-bit losses" || fail "FP8 base matmuls: losses too far from 16-bit"
import json, sys
whole, fp8 = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:])
print(f"  16-bit {whole[-1]:.6f}, FP8 {fp8[-1]:.6f}")
sys.exit(0 if len(whole) == len(fp8) == 8 and all(abs(a - b) <= 0.02 * abs(a) for a, b in zip(whole, fp8)) and whole != fp8 else 1)
PY
run fp8_full 2 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.steps=1 \
  --train.fp8_matmuls=true --output_dir="$WORK/fp8_full"
expect fp8_full err "train.fp8_matmuls=true needs LoRA (lora.r > 0)"
run ac_layers_over 2 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.steps=1 \
  --train.activation_checkpointing=true --train.activation_checkpointing_layers=9 --output_dir="$WORK/ac_over"
expect ac_layers_over err "train.activation_checkpointing_layers=9 is more than the model's 4 layers"

# The same job under mpirun -np 2 as the README launches it (DDP over MPI on CPU, micro batch 4 per rank: the
# single process's global batch of 8), 40 steps to bound the time. Without OMP_NUM_THREADS the two ranks share the
# node's cores (mpirun here binds nothing).
RUN_TIMEOUT=400 run tiny_np2 0 env -u OMP_NUM_THREADS "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" train --config "$RANKTUNE_SOURCE/configs/tiny.ini" \
  --device=cpu --train.micro_batch=4 --train.steps=40 --output_dir="$WORK/np2" --checkpoint.dir="$WORK/ckpt_np2"
expect tiny_np2 out "global batch 8 = micro batch 4 x grad_accum 1 x world size 2"
expect tiny_np2 out "step 40/40"
cpus=$(env -u OMP_NUM_THREADS nproc)  # nproc itself obeys OMP_NUM_THREADS
expect tiny_np2 out "$(( cpus / 2 > 0 ? cpus / 2 : 1 )) intra-op thread(s) per rank: $cpus CPU(s) in this rank's affinity mask, shared by 2 rank(s) on this node"
expect tiny_np2 out "replicas identical on 2 ranks: crc32c"
python3 - "$WORK/np2/metrics.jsonl" <<'PY' && ok "2 ranks: the loss falls" || fail "2 ranks: the loss did not fall"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["loss"], rows[-1]["loss"]
print(f"  {len(rows)} steps, loss {first:.3f} -> {last:.3f}")
sys.exit(0 if len(rows) == 40 and last < 0.7 * first else 1)
PY
finish
