# `scancel` of a running training job (issue #8: "SIGTERM = best-effort save within Slurm's KillWait"), in a real
# Slurm: scancel sends SIGTERM to every process of the job and SIGKILL KillWait seconds later (10 s in the harness).
# `ranktune train` under slurm/ddp.sbatch (srun, 2 CPU ranks) with no periodic checkpoints; cancelled once a random
# step is logged -> every rank stops at the next step boundary, commits a checkpoint of that step and exits 75
# before KillWait runs out (not killed) -> no process is left -> the checkpoint passes `ranktune checkpoint verify`
# -> the next run resumes from it (--resume=auto) and logs the same loss at every step as an uninterrupted run.
# The next run: ddp.sbatch requeues on 75 even after a scancel (docs/slurm.md), so today the job comes back PENDING
# and is released; should the script stop requeueing cancelled jobs, the job ends CANCELLED and is resubmitted.
# The non-Slurm side (SIGTERM to the ranks of mpirun, to one process) is tests/integration/train_sigterm.sh.
# About two minutes; skipped (77) with RANKTUNE_TEST_SKIP_REQUEUE=1, like the other requeue tests.
source "$(dirname "$0")/lib.sh"
if [ "${RANKTUNE_TEST_SKIP_REQUEUE:-0}" = 1 ]; then echo "SKIP: RANKTUNE_TEST_SKIP_REQUEUE=1"; exit 77; fi
slurm_up

export RANKTUNE_BIN RANKTUNE_ENV=none RANKTUNE_COMMAND=train RANKTUNE_CONFIG=configs/tiny.ini
N=2
STEPS=2000   # long enough that the cancel lands mid-run: scancel reaches the ranks 1-5 s later
TRAIN_ARGS="--device=cpu --seed=9 --train.steps=$STEPS --train.log_every=1 --train.warmup_steps=4
  --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0 --checkpoint.every_steps=0"
KILL_WAIT=$(sed -n 's/^KillWait=//p' "$SLURM_CONF")
T0=$(now)

# "step S loss L" for every step the job logged; for a resumed run the last value logged for a step wins.
losses() {
  sed -nE 's/^step ([0-9]+)\/[0-9]+ loss ([0-9.naife+-]+) .*/\1 \2/p' "$WORK/$1.out" |
    awk '{ v[$1] = $2 } END { for (s in v) print s, v[s] }' | sort -n
}

train_job() {
  local name=$1
  RANKTUNE_ARGS="$(echo $TRAIN_ARGS) --output_dir=$WORK/$name --checkpoint.dir=$WORK/$name/ckpt" \
    job_submit "$name" --ntasks-per-node=$N --gpus-per-node=$N --cpus-per-task=2 slurm/ddp.sbatch
}

job=$(train_job reference)
job_wait_done "$job" 600
job_expect "$job" COMPLETED 0:0 0
[ "$(losses reference | wc -l)" = "$STEPS" ] && ok "reference run: $STEPS steps ($(elapsed "$T0") s so far)" \
  || fail "reference run logged $(losses reference | wc -l) steps, expected $STEPS"

name=cancelled
at=$((3 + RANDOM % 38))
job=$(train_job "$name")
if job_wait_output "$name" "^step $at/" 300; then
  t0=$(now)
  scancel "$job"
  # The step ends within KillWait, with exit 75: the ranks saved and exited by themselves (after KillWait, SIGKILL).
  job_wait_output "$name" "^ranktune-ddp: exit " $((KILL_WAIT + 30))
  ok "$name: scancel after step $at was logged; the step ended in $(elapsed "$t0") s (KillWait ${KILL_WAIT} s)"
  expect "$name" out "ranktune-ddp: SIGTERM received"
  expect "$name" out "ranktune-ddp: exit 75 (preempted, checkpoint saved)"
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
  # The batch script requeues on exit 75 whatever sent the SIGTERM, and Slurm 22.05 accepts `scontrol requeue` of
  # a job that scancel is ending: the job comes back PENDING (Restarts=1) instead of ending CANCELLED. Either way it
  # must resume from the SIGTERM checkpoint: the requeued job once released, else a resubmission.
  t1=$(now)
  while :; do
    state=$(job_state "$job")
    [ "$state" = PENDING ] && break
    [ "$state" = CANCELLED ] && [ -z "$(job_stepds "$job")" ] && break   # the batch script is over: no requeue
    past "$t1" 60 && { fail "$name: job $job still $state 60 s after the step ended"; break; }
    sleep 0.2
  done
  expect_no_job_procs 10
  if [ "$(job_state "$job")" = PENDING ]; then
    ok "$name: NOTE: job $job was requeued after scancel (restarts=$(job_field "$job" Restarts)); releasing it"
    job_release_requeued "$job" 1
    header="ranktune-ddp: job $job restart 1 on "
    job_wait_done "$job" 600
    job_expect "$job" COMPLETED 0:0 1
  else
    job_expect "$job" CANCELLED "$(job_field "$job" ExitCode)" 0
    job=$(train_job "$name")
    header="ranktune-ddp: job $job restart 0 on "
    job_wait_done "$job" 600
    job_expect "$job" COMPLETED 0:0 0
  fi
  first=$(awk -v h="$header" 'index($0, h) { on = 1; next }
            on && /^step [0-9]+\// { split($2, a, "/"); print a[1]; exit }' "$WORK/$name.out")
  if [ -n "$stopped" ] && [ "$first" = $((stopped + 1)) ] &&
     grep -qE "^resume: .*/step_0*$stopped \(step $stopped," "$WORK/$name.out"; then
    ok "$name: the next run resumed from step $stopped, first step $first"
  else
    fail "$name: the next run did not resume from step '${stopped:-none}' (first step '${first:-none}')"
    grep -E '^resume:' "$WORK/$name.out" | sed 's/^/    /'
  fi
  if diff <(losses reference) <(losses "$name") >"$WORK/$name.diff"; then
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
