# The batch scripts' side of preemption, with signal_probe (ranktune's real signal handling and step-boundary
# agreement, no training) as the job: SIGUSR1 at a random step -> every rank stops at the same step -> exit 75 ->
# the script requeues -> the job restarts (SLURM_RESTART_COUNT) with --resume=auto and runs to the end. The signal
# comes the two ways Slurm sends it: to the batch shell only (--signal=B:USR1, forwarded by the script's trap) and to
# the step's processes directly. Exit codes other than 75 never requeue (slurm_batch_scripts).
# The same cycle with `ranktune train` and a loss comparison is slurm_train_preemption. RANKTUNE_TEST_SKIP_REQUEUE=1
# skips both (about a minute here).
source "$(dirname "$0")/lib.sh"
if [ "${RANKTUNE_TEST_SKIP_REQUEUE:-0}" = 1 ]; then echo "SKIP: RANKTUNE_TEST_SKIP_REQUEUE=1"; exit 77; fi
slurm_up

export RANKTUNE_BIN=$RANKTUNE_PROBE RANKTUNE_ENV=none RANKTUNE_PROBE_STEPS=30 RANKTUNE_PROBE_STEP_MS=150

# preempt_once NAME SCRIPT TASKS HOW: one job, preempted at a random step between 3 and 12.
preempt_once() {
  local name=$1 script=$2 n=$3 how=$4 at job stopped first
  at=$((3 + RANDOM % 10))
  job=$(job_submit "$name" --ntasks-per-node="$n" --gpus-per-node="$n" --cpus-per-task=2 "$script")
  preempt_and_resume "$name" "$job" "^probe: step $at\$" "$how" 1 || return
  job_wait_done "$job" 120
  job_expect "$job" COMPLETED 0:0 1
  stopped=$(sed -n 's/^probe: stop at step \([0-9]*\): .*/\1/p' "$WORK/$name.out")
  first=$(sed -n 's/^probe: rank [0-9]* has a stop request at step \([0-9]*\)$/\1/p' "$WORK/$name.out" | sort -n | head -1)
  # Every rank stops at the first step boundary after a rank received the signal.
  if [ -n "$stopped" ] && [ "$stopped" = "$first" ] && [ "$stopped" -gt "$at" ] && [ "$stopped" -le $((at + 5)) ]; then
    ok "$name: signalled after step $at, all $n rank(s) stopped at step $stopped, the first boundary after it arrived"
  else
    fail "$name: signalled after step $at, first seen at step '${first:-never}', stopped at step '${stopped:-never}'"
  fi
  # srun groups the tasks by when they ended ("tasks 0-3" or "tasks 0,2-3" + "task 1"): check the code only.
  if [ "$n" -gt 1 ]; then expect "$name" out "Exited with exit code 75"; fi
  expect "$name" out "SIGUSR1 on rank"
  expect "$name" out "exit 75 (preempted, checkpoint saved): requeueing job $job"
  expect "$name" out "probe: start world=$n restart=1 args=train --config=configs/tiny.ini"
  lines "$name" out "--resume=auto" 4   # the script's command line and the probe's, at the start and the restart
  expect "$name" out "probe: done after 30 steps"
  lines "$name" out "probe: stop at step" 1
}

preempt_once ddp_batch2 slurm/ddp.sbatch 2 batch
expect ddp_batch2 out "SIGUSR1 received"
expect ddp_batch2 out "forwarded to the ranks"
preempt_once ddp_step4 slurm/ddp.sbatch 4 step
lines ddp_step4 out "SIGUSR1 received" 0   # the step got it directly; the batch shell never did
preempt_once balanced_batch slurm/balanced.sbatch 1 batch
expect balanced_batch out "forwarded to ranktune"
expect balanced_batch out "probe: start world=1 restart=1 args=train --config=configs/tiny.ini --parallel.mode=balanced --resume=auto"

# The mpirun launcher (sites without PMIx): the script forwards SIGUSR1 to mpirun and also has Slurm signal every
# process of the job, since some mpirun builds do not forward it (docs/slurm.md). Here mpirun forwards it too: every
# rank gets it twice, and the job still stops once, at one step, and resumes.
job=$(RANKTUNE_LAUNCHER=mpirun RANKTUNE_MPIRUN_FLAGS="$MPIEXEC_FLAGS" \
        job_submit mpirun2 --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=2 slurm/ddp.sbatch)
if preempt_and_resume mpirun2 "$job" "^probe: step $((3 + RANDOM % 10))\$" batch 1; then
  job_wait_done "$job" 120
  job_expect "$job" COMPLETED 0:0 1
  expect mpirun2 out "forwarded to the ranks"
  lines mpirun2 out "has a stop request" 2
  lines mpirun2 out "probe: stop at step" 1
  expect mpirun2 out "exit 75 (preempted, checkpoint saved): requeueing job $job"
  expect mpirun2 out "probe: start world=2 restart=1"
  expect mpirun2 out "probe: done after 30 steps"
fi

# Preempted twice: the second restart continues too.
job=$(job_submit twice --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=2 slurm/ddp.sbatch)
preempt_and_resume twice "$job" "^probe: step 4\$" batch 1
preempt_and_resume twice "$job" "restart=1 args" batch 2
job_wait_done "$job" 120
job_expect "$job" COMPLETED 0:0 2
lines twice out "requeueing job $job" 2
expect twice out "probe: start world=2 restart=2"

expect_no_job_procs 10
finish
