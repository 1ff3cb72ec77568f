# One rank killed with SIGKILL at a random instant: the job ends within seconds (the other ranks are not left blocked
# in a collective), is not requeued (a crash is not a preemption), and leaves no process behind. Under srun (the
# script's --kill-on-bad-exit=1 with PMIx) at 2 and 4 ranks, and under mpirun inside the batch job.
# The job is signal_probe: ranktune's MpiEnv and the step-boundary all-reduce, where the surviving ranks wait.
# Then the same with `ranktune train` under srun, saving a checkpoint every few steps: the last committed checkpoint
# (`latest`) passes `ranktune checkpoint verify`, whatever the kill interrupted (a save included), and a
# resubmission resumes from it (--resume=auto) and runs to the end.
source "$(dirname "$0")/lib.sh"
slurm_up

TRAIN_BIN=$RANKTUNE_BIN
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

# kill_one_trainer NAME N: `ranktune train` on N ranks (srun), one rank SIGKILLed at a random instant once a few
# checkpoints are committed; then the checkpoint checks and the resubmission.
kill_one_trainer() {
  local name=$1 n=$2 steps=400 every=5 at job pids p pid t0 last logged first bin
  local args="--device=cpu --seed=3 --train.steps=$steps --train.log_every=1 --train.warmup_steps=4
    --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4
    --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0 --checkpoint.every_steps=$every
    --checkpoint.keep=3 --output_dir=$WORK/$name --checkpoint.dir=$WORK/$name/ckpt"
  submit() {
    RANKTUNE_BIN=$TRAIN_BIN RANKTUNE_COMMAND=train RANKTUNE_ARGS="$(echo $args)" \
      job_submit "$name" --ntasks-per-node="$n" --gpus-per-node="$n" --cpus-per-task=2 slurm/ddp.sbatch
  }
  at=$((3 * every + RANDOM % 30))
  job=$(submit)
  job_wait_output "$name" "^step $at/" 300 || { scancel "$job"; return; }
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r / 32767 * 0.5 }')"
  bin=$(dirname "$(readlink -f "$TRAIN_BIN")")/ranktune-main  # what the launcher bin/ranktune execs
  pids=()
  for p in $(pgrep -f -- "--output_dir=$WORK/$name "); do
    [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$bin" ] && pids+=("$p")
  done
  if [ "${#pids[@]}" != "$n" ]; then fail "$name: found ${#pids[@]} rank process(es), expected $n"; scancel "$job"; return; fi
  pid=${pids[RANDOM % n]}
  t0=$(now)
  kill -KILL "$pid"
  job_wait_done "$job" "$LIMIT" || { scancel "$job"; return; }
  logged=$(sed -nE 's/^step ([0-9]+)\/.*/\1/p' "$WORK/$name.out" | tail -1)
  ok "$name: a rank of $n killed after step $logged was logged, job over in $(elapsed "$t0") s"
  [ "$(job_state "$job")" = FAILED ] && ok "$name: job FAILED" || fail "$name: job $(job_state "$job")"
  [ "$(job_field "$job" Restarts)" = 0 ] && ok "$name: not requeued" || fail "$name: requeued"
  expect_no_job_procs 10
  # The last committed checkpoint: what `latest` names; no older than the save before step $at was logged (the save
  # of step k comes after the line of step k, before that of k + 1), no newer than the last step logged.
  last=$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)
  if [ -z "$last" ] || [ "$((10#${last#step_}))" -lt $(((at - 1) / every * every)) ] ||
     [ "$((10#${last#step_}))" -gt "$logged" ]; then
    fail "$name: latest is '$last' after step $logged was logged"; return
  fi
  if "$TRAIN_BIN" checkpoint verify "$WORK/$name/ckpt/$last" >"$WORK/$name.verify" 2>&1; then
    ok "$name: checkpoint verify $last: $(head -1 "$WORK/$name.verify")"
  else
    fail "$name: checkpoint verify of the last committed checkpoint $last failed:"; sed 's/^/    /' "$WORK/$name.verify"
    return
  fi
  last=$((10#${last#step_}))
  # Resubmitted by hand (a crash is not requeued): the new job resumes from that checkpoint and finishes.
  job=$(submit)
  job_wait_done "$job" 300
  job_expect "$job" COMPLETED 0:0 0
  first=$(awk -v h="ranktune-ddp: job $job restart 0" 'index($0, h) { on = 1; next }
            on && /^step [0-9]+\// { split($2, a, "/"); print a[1]; exit }' "$WORK/$name.out")
  if [ "$first" = $((last + 1)) ] && grep -qE "^resume: .*/step_0*$last \(step $last," "$WORK/$name.out"; then
    ok "$name: resubmission resumed from the verified step $last, first step $first"
  else
    fail "$name: resubmission did not resume from step $last (first step '${first:-none}')"
    grep -E '^resume:' "$WORK/$name.out" | sed 's/^/    /'
  fi
  expect "$name" out "step $steps/$steps "
  expect_no_job_procs 10
}

kill_one_trainer train2 2
finish
