# slurm/ddp.sbatch at 1, 2 and 4 tasks and slurm/balanced.sbatch, each training the tiny config for a few steps on
# CPU ranks (--device=cpu) in a real Slurm: the output (loss lines, the global batch), the job's final state, a
# committed checkpoint that `ranktune checkpoint verify` accepts, no requeue unless the exit code is 75, and env.sh +
# the module file inside a batch job.
source "$(dirname "$0")/lib.sh"
slurm_up

STEPS=20
TRAIN="--device=cpu --seed=3 --train.steps=$STEPS --train.log_every=5 --train.micro_batch=2 --train.seq_len=32
  --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=128
  --train.eval_every=0 --checkpoint.every_steps=10"
export RANKTUNE_BIN RANKTUNE_COMMAND=train RANKTUNE_ENV=none

# trained NAME: the job trained all steps, logged the loss, and left a committed, verifiable checkpoint of the last.
trained() {
  local name=$1 last
  expect "$name" out "step $STEPS/$STEPS loss "
  lines "$name" out "/$STEPS loss " $((STEPS / 5 + 1))   # step 1, then every 5th
  expect "$name" out "done: $STEPS steps, loss "
  last=$WORK/$name/ckpt/$(printf 'step_%08d' "$STEPS")
  if [ "$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)" = "$(basename "$last")" ] &&
     "$RANKTUNE_BIN" checkpoint verify "$last" >"$WORK/$name.verify" 2>&1; then
    ok "$name: $(cat "$WORK/$name.verify")"
  else
    fail "$name: no verified checkpoint of step $STEPS (latest: $(cat "$WORK/$name/ckpt/latest" 2>&1))"
    sed 's/^/    /' "$WORK/$name.verify" 2>/dev/null
  fi
}

# The scripts ask for 4 GPUs x 8 CPUs; the test node has 8 CPUs and 4 fake GPUs: sbatch options override #SBATCH.
for n in 1 2 4; do
  job=$(RANKTUNE_ARGS="$(echo $TRAIN) --output_dir=$WORK/ddp$n --checkpoint.dir=$WORK/ddp$n/ckpt" \
          job_submit "ddp$n" --ntasks-per-node=$n --gpus-per-node=$n --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_done "$job" 300
  job_expect "$job" COMPLETED 0:0 0
  expect "ddp$n" out "ranktune-ddp: job $job restart 0 on ci1: $n task(s), 2 CPU(s) and OMP_NUM_THREADS=2 each"
  expect "ddp$n" out "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=2"
  expect "ddp$n" out "train --config=configs/tiny.ini --resume=auto --device=cpu"
  expect "ddp$n" out "launch: srun (Slurm job $job step 0, SLURM_NTASKS=$n)"
  expect "ddp$n" out "global batch $((2 * n)) = micro batch 2 x grad_accum 1 x world size $n"
  expect "ddp$n" out "ranktune-ddp: exit 0"
  lines "ddp$n" out "launch:" 1
  lines "ddp$n" out "/$n   cpu" "$n"   # one table row per rank, local size n
  trained "ddp$n"
done
expect ddp4 out "mode:   ddp on CPU"
expect ddp4 out "3    $(hostname)"
# Slurm gave each job its fake GPUs: all of them visible to every rank.
expect ddp4 out "0,1,2,3"

# Balanced mode on CPU: one process, the stages on the CPU. Only that it trains and checkpoints under the script.
job=$(RANKTUNE_ARGS="$(echo $TRAIN) --output_dir=$WORK/balanced --checkpoint.dir=$WORK/balanced/ckpt" \
        job_submit balanced --gpus-per-node=4 --cpus-per-task=2 slurm/balanced.sbatch)
job_wait_done "$job" 300
job_expect "$job" COMPLETED 0:0 0
expect balanced out "srun --mpi=pmix --ntasks=1 --cpus-per-task=2"
expect balanced out "--parallel.mode=balanced --resume=auto --device=cpu"
expect balanced out "launch: srun (Slurm job $job step 0, SLURM_NTASKS=1)"
expect balanced out "mode:   balanced"
expect balanced out "global batch 2 = micro batch 2 x grad_accum 1 x world size 1"
expect balanced out "ranktune-balanced: exit 0"
trained balanced

# The checks below are about the scripts, not training: `ranktune topology`, quicker.
# A failure is not a preemption: the job fails with ranktune's code and is not requeued.
export RANKTUNE_COMMAND=topology RANKTUNE_ARGS=--device=cpu
job=$(RANKTUNE_ARGS="--device=cpu --parallel.mode=balanced" job_submit refused --ntasks-per-node=2 --gpus-per-node=2 \
        --cpus-per-task=2 slurm/ddp.sbatch)
job_wait_done "$job" 120
job_expect "$job" FAILED 2:0 0
expect refused out "parallel.mode=balanced runs ONE process"
expect refused out "ranktune-ddp: exit 2"
lines refused out "requeueing" 0

# A launcher the script does not know is refused before anything starts.
job=$(RANKTUNE_LAUNCHER=pbsdsh job_submit badlauncher --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 slurm/ddp.sbatch)
job_wait_done "$job" 60
job_expect "$job" FAILED 2:0 0
expect badlauncher out "RANKTUNE_LAUNCHER=pbsdsh: use srun or mpirun"

# The way a site runs it: env.sh loads the ranktune module (here: this checkout's module file pointed at the build
# tree), and the job finds `ranktune` on PATH.
if [ -r /usr/share/lmod/lmod/init/bash ]; then
  job=$(unset RANKTUNE_BIN
        export RANKTUNE_ENV="$RANKTUNE_SOURCE/slurm/env.sh" RANKTUNE_MODULES=ranktune \
               MODULEPATH="$RANKTUNE_SOURCE/modules" RANKTUNE_PREFIX="$RANKTUNE_BUILD"
        job_submit module --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_done "$job" 120
  job_expect "$job" COMPLETED 0:0 0
  expect module out "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=2 --cpu-bind=cores ranktune topology"
  expect module out "across 2 rank(s): correct"
  # A module that does not exist: the job fails at once and says what it tried.
  job=$(unset RANKTUNE_BIN
        export RANKTUNE_ENV="$RANKTUNE_SOURCE/slurm/env.sh" RANKTUNE_MODULES=ranktune/9.9 \
               MODULEPATH="$RANKTUNE_SOURCE/modules"
        job_submit nomodule --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 slurm/ddp.sbatch)
  job_wait_done "$job" 60
  job_expect "$job" FAILED 2:0 0
  expect nomodule out "module load ranktune/9.9\` failed"
else
  echo "note: Lmod not installed, the module-in-a-job check did not run"
fi

expect_no_job_procs 10
finish
