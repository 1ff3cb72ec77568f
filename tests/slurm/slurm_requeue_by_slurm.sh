# A job that Slurm itself requeues while it runs (issue #16 point 10), with signal_probe as the job: `scontrol
# requeue` of a running ddp.sbatch job and `scontrol requeuehold` of a running balanced.sbatch job. Slurm sends the
# steps SIGTERM, the ranks stop at the next step boundary and exit 75, and the job is already PENDING with Restarts=1
# when the batch script looks: the script must say so, must not call `scontrol requeue` (refused: "Job is pending
# execution") and must not advise a resubmission (a second job on the same checkpoint directory), nor take the
# requeue for a `scancel`. The job then restarts by itself (the held one after `scontrol release`), with
# --resume=auto, and completes with Restarts=1. The decision on recorded outputs, without a Slurm:
# tests/integration/slurm_requeue_decision.sh. About 30 s here; RANKTUNE_TEST_SKIP_REQUEUE=1 skips it.
source "$(dirname "$0")/lib.sh"
if [ "${RANKTUNE_TEST_SKIP_REQUEUE:-0}" = 1 ]; then echo "SKIP: RANKTUNE_TEST_SKIP_REQUEUE=1"; exit 77; fi
slurm_up
T0=$(now)

export RANKTUNE_BIN=$RANKTUNE_PROBE RANKTUNE_ENV=none RANKTUNE_PROBE_STEPS=30 RANKTUNE_PROBE_STEP_MS=150

# requeued_by_slurm NAME JOB PREFIX: the first run of JOB ended with the requeue Slurm made, and said so.
requeued_by_slurm() {
  local name=$1 job=$2 prefix=$3
  job_wait_output "$name" "^$prefix: exit " 60 || return 1
  expect "$name" out "probe: stop at step"   # the ranks saw the SIGTERM and stopped at a step boundary
  expect "$name" out "$prefix: exit 75 (checkpoint saved); Slurm has already requeued job $job (Restarts=1, JobState="
  expect "$name" out "do not resubmit: two jobs would share one checkpoint directory"
  lines "$name" out "resubmit to resume" 0
  lines "$name" out "cancelled by scancel" 0
  lines "$name" out "requeueing job" 0       # the script did not requeue on top of Slurm
  lines "$name" out "requeue refused" 0
  lines "$name" out "Job is pending execution" 0
}

ddp=$(job_submit requeue --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=2 slurm/ddp.sbatch)

if job_wait_output requeue "^probe: step $((3 + RANDOM % 8))\$" 120; then
  scontrol requeue "$ddp"
  requeued_by_slurm requeue "$ddp" ranktune-ddp
  expect requeue out "it is pending and resumes by itself (--resume=auto)"
  if job_release_requeued "$ddp" 1; then
    job_wait_done "$ddp" 120
    job_expect "$ddp" COMPLETED 0:0 1   # Restarts=1: one requeue, Slurm's, none on top of it
    expect requeue out "probe: start world=2 restart=1 args=train --config=configs/tiny.ini --resume=auto"
    expect requeue out "probe: done after 30 steps"
  fi
fi

# One after the other: a job that has ended can be requeued too, and this one runs only 30 steps.
held=$(job_submit requeuehold --cpus-per-task=2 --gpus-per-node=1 slurm/balanced.sbatch)
if job_wait_output requeuehold "^probe: step 3\$" 120; then
  scontrol requeuehold "$held"
  requeued_by_slurm requeuehold "$held" ranktune-balanced
  expect requeuehold out "it is pending, held until \`scontrol release $held\`, and resumes by itself"
  t0=$(now)
  until [ "$(job_state "$held")" = PENDING ] || past "$t0" 30; do sleep 0.2; done
  reason=$(job_field "$held" Reason)
  case "$reason" in *held*) ok "requeuehold: job $held pending, $reason" ;;
                    *) fail "requeuehold: job $held $(job_state "$held"), reason $reason; expected held" ;; esac
  scontrol release "$held"
  if job_release_requeued "$held" 1; then
    job_wait_done "$held" 120
    job_expect "$held" COMPLETED 0:0 1
    expect requeuehold out \
      "probe: start world=1 restart=1 args=train --config=configs/tiny.ini --parallel.mode=balanced --resume=auto"
    expect requeuehold out "probe: done after 30 steps"
  fi
fi

expect_no_job_procs 10
ok "total $(elapsed "$T0") s"
finish
