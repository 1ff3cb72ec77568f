# `scancel` of a running training job (issue #8: "SIGTERM = best-effort save within Slurm's KillWait"), in a real
# Slurm: scancel sends SIGTERM to every process of the job and SIGKILL KillWait seconds later (10 s in the harness).
# `ranktune train` under slurm/ddp.sbatch (srun, 2 CPU ranks) with no periodic checkpoints; cancelled once a random
# step is logged -> every rank stops at the next step boundary, commits a checkpoint of that step and exits 75
# before KillWait runs out (not killed) -> the script sees a cancel (JobState=COMPLETING Reason=None) and does NOT
# requeue: the job ends CANCELLED with Restarts=0 -> no process is left -> the checkpoint passes `ranktune checkpoint
# verify` -> a resubmission resumes from it (--resume=auto) and logs the same loss at every step as an uninterrupted
# run. Alongside, with signal_probe as the job (runs while the reference trains):
# - the time limit, which sends the same SIGTERM as scancel, still requeues (JobState=COMPLETING Reason=TimeLimit):
#   ddp.sbatch with --time=1; --signal=B:URG@1 replaces the script's B:USR1@300, which a 1-minute job would get at
#   once, with a signal bash ignores, so the job meets its limit as one submitted without --signal does. Slurm
#   checks time limits every 30 s or so: the SIGTERM comes 60-90 s after the start. The requeued job is then
#   cancelled while it is PENDING.
# - balanced.sbatch does not requeue a cancelled job either.
# SIGUSR1 (`scancel --signal=USR1`, --signal=B:USR1) requeues: slurm_preemption, slurm_train_preemption.
# The non-Slurm side (SIGTERM to the ranks of mpirun, to one process) is tests/integration/train_sigterm.sh.
# About two and a half minutes (the time-limit job sets the pace); skipped (77) with RANKTUNE_TEST_SKIP_REQUEUE=1,
# like the other requeue tests.
source "$(dirname "$0")/lib.sh"
if [ "${RANKTUNE_TEST_SKIP_REQUEUE:-0}" = 1 ]; then echo "SKIP: RANKTUNE_TEST_SKIP_REQUEUE=1"; exit 77; fi
slurm_up

export RANKTUNE_BIN RANKTUNE_ENV=none RANKTUNE_COMMAND=train RANKTUNE_CONFIG=configs/tiny.ini
N=2
STEPS=6000   # the reference run's length, and the cancelled one's: its steps are paced (PACE_MS) so that the
             # cancel lands mid-run, where scancel reached the ranks 1-5 s later and 6000 unpaced steps sometimes
             # ended first on a loaded 2-core machine
PACE_MS=20   # RANKTUNE_TEST_STEP_SLEEP_MS of the cancelled run: 6000 steps take at least 120 s, and change no number
TRAIN_ARGS="--device=cpu --seed=9 --train.steps=$STEPS --train.log_every=1 --train.warmup_steps=4
  --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0 --checkpoint.every_steps=0"
KILL_WAIT=$(sed -n 's/^KillWait=//p' "$SLURM_CONF")
# What the batch scripts print after a cancel, and after the time limit (each followed by the resume hint / state).
CANCELLED="exit 75 (checkpoint saved), cancelled by scancel (JobState=COMPLETING Reason=None): not requeueing;"
REQUEUED="exit 75 (preempted, checkpoint saved): requeueing job"
T0=$(now)


job=$(train_job reference)
# The probe jobs (1 CPU each, next to the reference's 4 of the node's 8).
probe_job() {
  local name=$1
  shift
  RANKTUNE_BIN=$RANKTUNE_PROBE RANKTUNE_PROBE_STEPS=100000 RANKTUNE_PROBE_STEP_MS=200 \
    job_submit "$name" --cpus-per-task=1 --gpus-per-node=1 "$@"
}
timelimit=$(probe_job timelimit --ntasks-per-node=1 --time=1 --signal=B:URG@1 slurm/ddp.sbatch)
timelimit_t0=$(now)
balanced=$(probe_job balanced slurm/balanced.sbatch)
if job_wait_output balanced "^probe: step 3\$" 120; then
  scancel "$balanced"
  job_wait_done "$balanced" $((KILL_WAIT + 60))
  expect balanced out "probe: stop at step"
  lines balanced out "requeueing job" 0
  # On a loaded test node the stopped task can still be in MPI_Finalize when srun's wait after the cancel runs out;
  # srun then forces the step down and the script sees no 75 (seen once in a full ctest run). Either way the job ends
  # CANCELLED and is not requeued; when the 75 arrived, the script says so and names no step (the probe logs none).
  if grep -q "^ranktune-balanced: exit 75" "$WORK/balanced.out"; then
    expect balanced out "ranktune-balanced: $CANCELLED resubmit to resume from that checkpoint (--resume=auto)"
    job_expect "$balanced" CANCELLED 75:0 0   # the exit code of the batch script
  elif [ "$(job_state "$balanced") $(job_field "$balanced" Restarts)" = "CANCELLED 0" ]; then
    ok "balanced: the step was forced down after the stop; job CANCELLED, not requeued"
  else
    fail "balanced: job $(job_state "$balanced"), restarts $(job_field "$balanced" Restarts); expected CANCELLED, 0"
  fi
else
  scancel "$balanced"
fi

job_wait_done "$job" 600
job_expect "$job" COMPLETED 0:0 0
[ "$(job_losses reference | wc -l)" = "$STEPS" ] && ok "reference run: $STEPS steps ($(elapsed "$T0") s so far)" \
  || fail "reference run logged $(job_losses reference | wc -l) steps, expected $STEPS"

# The time limit: the same SIGTERM, exit 75, and this time a requeue (Reason=TimeLimit). Then cancel the pending job.
if job_wait_output timelimit "^ranktune-ddp: exit " 150; then
  ok "timelimit: the step ended $(elapsed "$timelimit_t0") s after the submission (--time=1)"
  expect timelimit out "SIGTERM received"
  expect timelimit out "probe: stop at step"
  expect timelimit out "ranktune-ddp: $REQUEUED $timelimit to resume (JobState=COMPLETING Reason=TimeLimit)"
  lines timelimit out "cancelled by scancel" 0
  t1=$(now)
  until [ "$(job_state "$timelimit")" = PENDING ] || past "$t1" 30; do sleep 0.2; done
  job_expect "$timelimit" PENDING 0:0 1
fi
scancel "$timelimit"
job_wait_done "$timelimit" 60

name=cancelled
at=$((3 + RANDOM % 38))
job=$(RANKTUNE_TEST_STEP_SLEEP_MS=$PACE_MS train_job "$name")
if job_wait_output "$name" "^step $at/" 300; then
  t0=$(now)
  scancel "$job"
  # The step ends within KillWait, with exit 75: the ranks saved and exited by themselves (after KillWait, SIGKILL).
  job_wait_output "$name" "^ranktune-ddp: exit " $((KILL_WAIT + 30))
  ok "$name: scancel after step $at was logged; the step ended in $(elapsed "$t0") s (KillWait ${KILL_WAIT} s)"
  expect "$name" out "ranktune-ddp: SIGTERM received"
  stopped=$(sed -n 's/^preempted: checkpoint committed at step \([0-9]*\);.*/\1/p' "$WORK/$name.out")
  if [ -n "$stopped" ] && [ "$stopped" -gt "$at" ] && [ "$stopped" -lt "$STEPS" ] &&
     grep -qE "^stop: SIGTERM on rank [0-9]+: best-effort save and exit at step $stopped\$" "$WORK/$name.out"; then
    ok "$name: $(grep '^stop: ' "$WORK/$name.out"); checkpoint committed"
  else
    fail "$name: cancelled after step $at, checkpoint committed at step '${stopped:-never}'"
    grep -E '^(stop|preempted|checkpoint|ranktune-ddp|srun):' "$WORK/$name.out" | sed 's/^/    /'
  fi
  lines "$name" out "checkpoint: step " 1   # the SIGTERM save, and no other
  latest=$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)
  [ -n "$stopped" ] && [ "$latest" = "$(printf 'step_%08d' "$stopped")" ] && ok "$name: latest -> $latest" \
    || fail "$name: latest is '$latest', expected the step of the SIGTERM save ('${stopped:-none}')"
  if "$RANKTUNE_BIN" checkpoint verify "$WORK/$name/ckpt/$latest" >"$WORK/$name.verify" 2>&1; then
    ok "$name: checkpoint verify: $(head -1 "$WORK/$name.verify")"
  else
    fail "$name: checkpoint verify of $latest failed:"; sed 's/^/    /' "$WORK/$name.verify"
  fi
  # Not requeued: the batch script saw the cancel, the job ends CANCELLED and stays so, with Restarts=0.
  if [ -n "$stopped" ]; then
    expect "$name" out "ranktune-ddp: $CANCELLED resubmit to resume from step $stopped (--resume=auto)"
  fi
  lines "$name" out "requeueing job" 0
  job_wait_done "$job" 60
  t1=$(now)
  until [ -z "$(job_stepds "$job")" ]; do   # the batch script is over: nothing can requeue the job any more
    past "$t1" 60 && { fail "$name: job $job: slurmstepd still alive 60 s after the job ended"; break; }
    sleep 0.2
  done
  sleep 2
  job_expect "$job" CANCELLED 75:0 0
  expect_no_job_procs 10
  # The user resubmits the same script: --resume=auto continues from the SIGTERM checkpoint.
  job=$(train_job "$name")
  header="ranktune-ddp: job $job restart 0 on "
  job_wait_done "$job" 600
  job_expect "$job" COMPLETED 0:0 0
  first=$(awk -v h="$header" 'index($0, h) { on = 1; next }
            on && /^step [0-9]+\// { split($2, a, "/"); print a[1]; exit }' "$WORK/$name.out")
  if [ -n "$stopped" ] && [ "$first" = $((stopped + 1)) ] &&
     grep -qE "^resume: .*/step_0*$stopped \(step $stopped," "$WORK/$name.out"; then
    ok "$name: the next run resumed from step $stopped, first step $first"
  else
    fail "$name: the next run did not resume from step '${stopped:-none}' (first step '${first:-none}')"
    grep -E '^resume:' "$WORK/$name.out" | sed 's/^/    /'
  fi
  if diff <(job_losses reference) <(job_losses "$name") >"$WORK/$name.diff"; then
    ok "$name: loss of every step identical to the uninterrupted run"
  else
    fail "$name: losses differ from the uninterrupted run:"; head -10 "$WORK/$name.diff" | sed 's/^/    /'
  fi
else
  scancel "$job"
fi

expect_no_job_procs 10
ok "total $(elapsed "$T0") s"
finish
