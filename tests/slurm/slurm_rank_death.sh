# One rank killed with SIGKILL at a random instant: the job ends within seconds (the other ranks are not left blocked
# in a collective), is not requeued (a crash is not a preemption), and leaves no process behind. Under srun (the
# script's --kill-on-bad-exit=1 with PMIx) at 2 and 4 ranks, and under mpirun inside the batch job.
# The job is signal_probe: ranktune's MpiEnv and the step-boundary all-reduce, where the surviving ranks wait.
source "$(dirname "$0")/lib.sh"
slurm_up

export RANKTUNE_BIN=$RANKTUNE_PROBE RANKTUNE_ENV=none RANKTUNE_PROBE_STEPS=600 RANKTUNE_PROBE_STEP_MS=100
# Seconds from the kill to the end of the job. The surviving ranks are blocked in a collective and hold SIGTERM
# (their handler waits for a step boundary to save), so Slurm ends them with SIGKILL after KillWait (10 s here).
LIMIT=25

kill_one_rank() {
  local name=$1 n=$2 launcher=$3 job victim pid t0 took rc
  job=$(RANKTUNE_LAUNCHER=$launcher RANKTUNE_MPIRUN_FLAGS="$MPIEXEC_FLAGS" \
          job_submit "$name" --ntasks-per-node="$n" --gpus-per-node="$n" --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_output "$name" "^probe: step 3\$" 120 || return
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r / 32767 * 1.5 }')"
  victim=$((RANDOM % n))
  pid=$(sed -n "s/^probe: rank $victim pid \([0-9]*\) .*/\1/p" "$WORK/$name.out")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then fail "$name: rank $victim's pid '$pid' is not running"; return; fi
  t0=$(now)
  kill -KILL "$pid"
  job_wait_done "$job" "$LIMIT" || { scancel "$job"; return; }
  took=$(elapsed "$t0")
  ok "$name: rank $victim of $n killed at step $(grep -c '^probe: step' "$WORK/$name.out"), job over in ${took} s"
  rc=$(sed -n 's/^ranktune-ddp: exit \([0-9]*\)$/\1/p' "$WORK/$name.out")
  if [ -n "$rc" ] && [ "$rc" != 0 ] && [ "$rc" != 75 ]; then ok "$name: the step failed with $rc"; else fail "$name: step exit '$rc'"; fi
  [ "$(job_state "$job")" = FAILED ] && ok "$name: job FAILED" || fail "$name: job $(job_state "$job")"
  [ "$(job_field "$job" Restarts)" = 0 ] && ok "$name: not requeued" || fail "$name: requeued"
  lines "$name" out "probe: done" 0
  expect_no_job_procs 10
}

kill_one_rank srun2 2 srun
kill_one_rank srun4a 4 srun
kill_one_rank srun4b 4 srun
kill_one_rank mpirun4 4 mpirun
finish
