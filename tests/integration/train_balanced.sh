# Balanced mode on CPU stages, end to end through `ranktune train`: 3 stages sequential and pipelined (GPipe, 2 and 4
# micro-batches), with activation checkpointing, full fine-tune and LoRA, log the same loss at every step as the
# single-device run (fp32, 1e-5 relative); the placement table and per-stage busy times are printed; a balanced
# checkpoint resumes in balanced, single and DDP (2 ranks) mode and a DDP checkpoint in balanced mode (same tensors)
# with the uninterrupted run's losses; activation
# checkpointing under DDP (2 ranks) matches too. The refusal of balanced under mpirun -np 2 is
# topology_refuses_balanced.sh.
source "$(dirname "$0")/lib.sh"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=7 --train.log_every=1 --train.warmup_steps=2
  --train.seq_len=64 --model.num_layers=4 --model.hidden_size=64 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=160 --train.eval_every=0 --checkpoint.every_steps=0)
STEPS=8


train() {  # train NAME RANKS EXTRA...
  local name=$1 n=$2; shift 2
  timeout 300 "${MPIRUN[@]}" "$n" "$RANKTUNE_BIN" train "${ARGS[@]}" --train.micro_batch="${MB:-4}" --output_dir="$WORK/$name" \
    --checkpoint.dir="$WORK/$name/ckpt" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" \
    || { fail "$name: exit $?"; sed 's/^/    /' "$WORK/$name.err" | tail -5; return 1; }
  losses "$WORK/$name" >"$WORK/$name.loss"
}

same_losses() {  # same_losses REF OTHER [FIRST_STEP]: per-step losses agree to 1e-5 relative
  python3 - "$WORK/$1.loss" "$WORK/$2.loss" "${3:-1}" <<'PY' && ok "$2 logs the losses of $1" || fail "$2 differs from $1"
import sys
a = {int(l.split()[0]): float(l.split()[1]) for l in open(sys.argv[1])}
b = {int(l.split()[0]): float(l.split()[1]) for l in open(sys.argv[2])}
steps = [s for s in a if s >= int(sys.argv[3])]
assert steps and all(s in b for s in steps), (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"  {len(steps)} steps, worst relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}

train single 1 --train.steps=$STEPS && ok "single-device reference"
train seq 1 --train.steps=$STEPS --parallel.mode=balanced --parallel.stages=3 && same_losses single seq
expect seq out "balanced: 3 stage(s), sequential"
expect seq out "balanced plan"
expect seq out "balanced: busy time per stage"
train pipe2 1 --train.steps=$STEPS --parallel.mode=balanced --parallel.stages=3 --parallel.micro_batches=2 \
  && same_losses single pipe2
expect pipe2 out "GPipe with 2 micro-batches"
train pipe4ac 1 --train.steps=$STEPS --parallel.mode=balanced --parallel.stages=3 --parallel.micro_batches=4 \
  --train.activation_checkpointing=true && same_losses single pipe4ac
expect pipe4ac out "activation checkpointing"

train lora_single 1 --train.steps=$STEPS --lora.r=4 --train.lr=3e-3
train lora_pipe 1 --train.steps=$STEPS --lora.r=4 --train.lr=3e-3 --parallel.mode=balanced --parallel.stages=2 \
  --parallel.micro_batches=2 --train.activation_checkpointing=true && same_losses lora_single lora_pipe

MB=2 train ddp_ac 2 --train.steps=$STEPS --train.activation_checkpointing=true \
  && same_losses single ddp_ac

# Checkpoints: a balanced run ends at step 4 (constant LR, so 4 and 8 steps share a schedule) and is resumed to step 8
# balanced (other micro-batching), in single mode and by DDP.
CONST=(--train.schedule=constant)
train constant 1 --train.steps=$STEPS "${CONST[@]}"
train half 1 --train.steps=4 "${CONST[@]}" --parallel.mode=balanced --parallel.stages=3 --parallel.micro_batches=2
cp -r "$WORK/half" "$WORK/half_single"
cp -r "$WORK/half" "$WORK/half_ddp"
train half 1 --train.steps=$STEPS "${CONST[@]}" --parallel.mode=balanced --parallel.stages=3 \
  --parallel.micro_batches=4 --resume=auto && same_losses constant half 5
expect half out "resume: "
train half_single 1 --train.steps=$STEPS "${CONST[@]}" --resume=auto && same_losses constant half_single 5
# The same balanced checkpoint resumed by DDP at 2 ranks (same global batch), and a DDP checkpoint resumed balanced.
MB=2 train half_ddp 2 --train.steps=$STEPS "${CONST[@]}" --resume=auto && same_losses constant half_ddp 5
expect half_ddp out "resume: "
MB=2 train ddp_half 2 --train.steps=4 "${CONST[@]}"
train ddp_half 1 --train.steps=$STEPS "${CONST[@]}" --parallel.mode=balanced --parallel.stages=3 \
  --parallel.micro_batches=2 --resume=auto && same_losses constant ddp_half 5
expect ddp_half out "resume: "
run again 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.micro_batch=4 --train.steps=$STEPS "${CONST[@]}" --resume=auto \
  --output_dir="$WORK/half" --checkpoint.dir="$WORK/half/ckpt"
expect again out "nothing to do: the checkpoint is already at step $STEPS of $STEPS"
"$RANKTUNE_BIN" checkpoint verify "$WORK/half/ckpt" >"$WORK/verify.out" 2>&1 && ok "balanced checkpoint verifies" \
  || fail "balanced checkpoint does not verify: $(tail -2 "$WORK/verify.out")"

# Bad input: more pipeline micro-batches than sequences is refused with the fix, exit 2.
run too_many 2 "$RANKTUNE_BIN" train "${ARGS[@]}" --train.micro_batch=4 --train.steps=1 --parallel.mode=balanced --parallel.stages=2 \
  --parallel.micro_batches=8 --output_dir="$WORK/bad" --checkpoint.dir="$WORK/bad/ckpt"
expect too_many err "parallel.micro_batches=8"
finish
