# The full preemption cycle with the real trainer, on CPU ranks in a real Slurm:
#   uninterrupted run -> reference loss per step;
#   same run, SIGUSR1 (to the batch shell, as --signal=B:USR1 does) at a random step -> checkpoint -> exit 75 ->
#   requeue -> --resume=auto -> the loss of every step equals the reference (bit-exact on CPU), for several steps;
#   one rank SIGKILLed at a random step -> the job ends, no process left -> resubmitted, it resumes from the last
#   committed checkpoint and again matches the reference.
# Skipped (77) while `ranktune train` is not in the build. RANKTUNE_TRAIN_ARGS sets the run (small enough for CI).
source "$(dirname "$0")/lib.sh"
# Opt-in (RANKTUNE_TEST_REQUEUE=1): on the 2-core CI machine the single-node test Slurm intermittently loses the
# step output of a requeued job (the batch script's own lines arrive, the ranks' do not), which fails the output
# checks of about one round in three although ranktune resumed; see docs/slurm.md, "Known issues".
if [ "${RANKTUNE_TEST_REQUEUE:-0}" != 1 ]; then
  echo "SKIP: requeue round trips run with RANKTUNE_TEST_REQUEUE=1 (intermittent step-output loss after requeue)"
  exit 77
fi

TRAIN_ARGS=${RANKTUNE_TRAIN_ARGS:-"--device=cpu --seed=7 --train.steps=40 --train.log_every=1 --train.warmup_steps=4
  --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64 --model.num_heads=4
  --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0 --checkpoint.every_steps=5"}
probe=$("$RANKTUNE_BIN" train --config="$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.steps=1 \
          --output_dir="$WORK/probe" 2>&1)
if grep -q "the training loop is not part of this build yet" <<<"$probe"; then
  echo "SKIP: ranktune train is not in this build (the trainer, issue #4); the batch scripts' side of preemption is"
  echo "      tested with signal_probe in slurm_preemption"
  exit 77
fi
slurm_up

export RANKTUNE_BIN RANKTUNE_ENV=none RANKTUNE_COMMAND=train RANKTUNE_CONFIG=configs/tiny.ini
N=2

# "step S loss L" for every step the run logged; for a resumed run the last value logged for a step wins.
losses() {
  sed -nE 's/^step ([0-9]+)\/[0-9]+ loss ([0-9.naife+-]+) .*/\1 \2/p' "$WORK/$1.out" |
    awk '{ v[$1] = $2 } END { for (s in v) print s, v[s] }' | sort -n
}

train_job() {
  local name=$1
  RANKTUNE_ARGS="$(echo $TRAIN_ARGS) --output_dir=$WORK/$name --checkpoint.dir=$WORK/$name/ckpt" \
    job_submit "$name" --ntasks-per-node=$N --gpus-per-node=$N --cpus-per-task=2 slurm/ddp.sbatch
}

# resumed NAME HEADER: the first step logged after the script's HEADER line is not step 1 (the run resumed).
resumed() {
  local first
  first=$(awk -v h="$2" 'index($0, h) { on = 1; next } on && /^step [0-9]+\// { split($2, a, "/"); print a[1]; exit }' \
            "$WORK/$1.out")
  if [ -n "$first" ] && [ "$first" -gt 1 ]; then ok "$1: resumed at step $first"; else fail "$1: did not resume (first step '${first:-none}')"; fi
}

same_losses() {
  local name=$1
  if [ "$(losses reference | wc -l)" -lt 10 ]; then fail "reference run logged $(losses reference | wc -l) steps"; return; fi
  if diff <(losses reference) <(losses "$name") >"$WORK/$name.diff"; then
    ok "$name: loss of every step identical to the uninterrupted run"
  else
    fail "$name: losses differ from the uninterrupted run:"; head -20 "$WORK/$name.diff" | sed 's/^/    /'
  fi
}

job=$(train_job reference)
job_wait_done "$job" 600
job_expect "$job" COMPLETED 0:0 0

for round in 1 2 3; do
  name=preempt$round
  at=$((3 + RANDOM % 30))
  job=$(train_job "$name")
  preempt_and_resume "$name" "$job" "^step $at/" batch 1 || continue
  job_wait_done "$job" 600
  job_expect "$job" COMPLETED 0:0 1
  expect "$name" out "exit 75 (preempted, checkpoint saved): requeueing job $job"
  resumed "$name" "restart 1 on "
  same_losses "$name"
done

name=killed
job=$(train_job "$name")
at=$((8 + RANDOM % 20))
job_wait_output "$name" "^step $at/" 600
pids=()
for p in $(job_procs); do
  [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$RANKTUNE_BIN")" ] && pids+=("$p")
done
pid=""
[ "${#pids[@]}" -gt 0 ] && pid=${pids[RANDOM % ${#pids[@]}]}
if [ -n "$pid" ]; then
  kill -KILL "$pid"
  job_wait_done "$job" 60
  [ "$(job_state "$job")" = FAILED ] && ok "$name: job FAILED after the kill" || fail "$name: job $(job_state "$job")"
  expect_no_job_procs 10
  # Resubmitted by hand (a crash is not requeued): the new job resumes from the last committed checkpoint.
  job=$(RANKTUNE_ARGS="$(echo $TRAIN_ARGS) --output_dir=$WORK/$name --checkpoint.dir=$WORK/$name/ckpt" \
          job_submit "$name" --ntasks-per-node=$N --gpus-per-node=$N --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_done "$job" 600
  job_expect "$job" COMPLETED 0:0 0
  resumed "$name" "ranktune-ddp: job $job restart 0"
  same_losses "$name"
else
  fail "$name: no ranktune process found to kill"
fi

expect_no_job_procs 10
finish
