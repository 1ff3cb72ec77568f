# QLoRA end to end (model.quantize=nf4, docs/models.md "4-bit base (QLoRA)"): refused without LoRA (exit 2, with the
# reason); a random-init model trains with a 4-bit base and says what the base costs; a run interrupted at a checkpoint
# and resumed has the losses of an uninterrupted one bit for bit (the base is quantized again, identically), balanced
# mode on two CPU stages and DDP on 2 ranks have them within 1e-5; over a base made by transformers, generate runs on
# the checkpoint and `ranktune export --export.merge=true` writes a bf16 model directory (skipped without
# transformers).
source "$(dirname "$0")/lib.sh"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 --train.warmup_steps=1 --train.seq_len=32
  --train.micro_batch=2 --train.eval_every=0 --train.log_every=1 --model.num_layers=2 --model.hidden_size=64
  --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=128 --model.quantize=nf4)
QLORA=(--lora.r=8 --lora.alpha=16 --train.lr=1e-2)

run full 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.steps=1 --output_dir="$WORK/full"
expect full err "model.quantize=nf4 needs LoRA (lora.r > 0)"
expect full err "ranktune: hint:"

run straight 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${QLORA[@]}" --train.steps=4 --checkpoint.every_steps=2 \
  --output_dir="$WORK/straight"
expect straight out "base: decoder linears in NF4 (model.quantize=nf4)"
expect straight out "trainable: LoRA r=8"
expect straight out "step 4/4"
run first 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${QLORA[@]}" --train.steps=2 --checkpoint.every_steps=2 \
  --output_dir="$WORK/split"
run resumed 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${QLORA[@]}" --train.steps=4 --checkpoint.every_steps=2 \
  --output_dir="$WORK/split" --resume=auto
expect resumed out "resume: $WORK/split/checkpoints/step_00000002"
if [ "$(losses "$WORK/straight")" = "$(losses "$WORK/split")" ] && [ "$(losses "$WORK/split" | wc -l)" = 4 ]; then
  ok "resumed losses equal the uninterrupted run's, bit for bit"
else
  fail "resumed losses differ:"; paste <(losses "$WORK/straight") <(losses "$WORK/split") | sed 's/^/    /'
fi
python3 - "$WORK/straight" <<'PY' && ok "the loss moved: the adapters train over the 4-bit base" \
  || fail "loss did not move"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
sys.exit(0 if len({r["loss"] for r in rows if "loss" in r}) > 1 else 1)
PY

near_losses() {  # near_losses REF OTHER: the 4 per-step losses agree within 1e-5 relative
  python3 - <(losses "$WORK/$1") <(losses "$WORK/$2") <<'PY' && ok "$2 logs the losses of $1 (1e-5)" \
    || fail "$2 differs"
import sys
a = {int(l.split()[0]): float(l.split()[1]) for l in open(sys.argv[1])}
b = {int(l.split()[0]): float(l.split()[1]) for l in open(sys.argv[2])}
assert len(a) == 4 and sorted(a) == sorted(b), (a, b)
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
print(f"  worst relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
# Balanced mode on two CPU stages (the 4-bit linears move with their layers), and DDP on 2 ranks (each quantizes its
# own copy; the replica check compares what trains and the NF4 base's bytes): the single-device run's losses.
NOSAVE=(--train.steps=4 --checkpoint.every_steps=0 --checkpoint.at_end=false)
run balanced 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${QLORA[@]}" "${NOSAVE[@]}" --parallel.mode=balanced \
  --parallel.stages=2 --parallel.micro_batches=2 --output_dir="$WORK/balanced"
expect balanced out "balanced: 2 stage(s)"
near_losses straight balanced
ARGS_DDP=("${ARGS[@]/--train.micro_batch=2/--train.micro_batch=1}")
run ddp 0 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" train "${ARGS_DDP[@]}" "${QLORA[@]}" "${NOSAVE[@]}" --output_dir="$WORK/ddp"
expect ddp out "replicas identical on 2 ranks"
expect ddp out "; frozen 4-bit base: 84 tensors"  # 2 layers x 7 linears x 6 bitsandbytes tensors, each rank's own
near_losses straight ddp

# Export and generate need a base directory (a LoRA run over a random base has none to rebuild the model from).
CHECK=(python3 "$RANKTUNE_SOURCE/tests/integration/check_export.py")
if "${CHECK[@]}" deps && "${CHECK[@]}" base "$WORK/base" >/dev/null 2>&1; then
  run train_base 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${QLORA[@]}" --train.steps=2 --checkpoint.every_steps=2 \
    --model.path="$WORK/base" --data.tokenizer=byte --output_dir="$WORK/over_base"
  expect train_base out "base: decoder linears in NF4"
  run generate 0 "$RANKTUNE_BIN" generate "$WORK/over_base/checkpoints" --device=cpu --generate.prompt="Once" \
    --generate.max_new_tokens=4
  run merged 0 "$RANKTUNE_BIN" export "$WORK/over_base/checkpoints" "$WORK/merged" --export.merge=true
  python3 - "$WORK/merged" "$WORK/base" <<'PY' \
    && ok "merged export: bf16, every tensor of the base, adapters folded in" || fail "merged export"
import json, sys
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
c = json.load(open(sys.argv[1] + "/config.json"))
assert c.get("torch_dtype", c.get("dtype")) == "bfloat16", c
with safe_open(sys.argv[1] + "/model.safetensors", "pt") as f, safe_open(sys.argv[2] + "/model.safetensors", "pt") as b:
    assert set(f.keys()) == set(b.keys()), set(f.keys()) ^ set(b.keys())
    assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    name = "model.layers.1.mlp.down_proj.weight"
    moved = (f.get_tensor(name).float() - b.get_tensor(name).float()).abs().max().item()
    assert moved > 0, "the adapter did not move the merged weight"
m = AutoModelForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    assert torch.isfinite(m(torch.tensor([[1, 2, 3]])).logits).all()
PY
else
  echo "skip: the export part needs transformers, peft and safetensors (check_export.py deps)"
fi
finish
