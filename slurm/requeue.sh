# shellcheck shell=bash
# The end of slurm/ddp.sbatch and slurm/balanced.sbatch, sourced by both so that the requeue decision is the same for
# the two modes: wait for the job step through the signals the script traps, then requeue the job when ranktune exited
# 75 (checkpoint saved), unless the job was cancelled. Each script finds this file next to itself, in the submit or
# working directory's slurm/, in $RANKTUNE_ROOT/share/ranktune/slurm (installed), or next to the script as submitted.
#
# The script provides: step (pid of the launched step) and signalled (its trap sets it to 1), both globals.

# wait_step: waits until the step has ended; rc = its exit status. A trapped signal ends `wait` early: wait again.
# 127 means the step was already collected (a signal came just after it ended): the status from the previous wait
# stands.
wait_step() {
  local status
  rc=127
  while :; do
    signalled=0
    # shellcheck disable=SC2154  # step: set by the sourcing script
    wait "$step"
    status=$?
    [ "$status" = 127 ] && break
    rc=$status
    [ "$signalled" = 1 ] || break
  done
}

# What to do after the step ended, from Slurm's record of the job (`scontrol -o show job`, read now that the step has
# ended) and the restart count this run started with (SLURM_RESTART_COUNT; unset in the first run). Measured with
# Slurm 22.05 (docs/slurm.md; the recorded outputs are in tests/slurm/scontrol/):
#   Restarts above this run's count         Slurm has already requeued the job (scontrol requeue or requeuehold;
#                                           a preemption with PreemptMode=REQUEUE takes the same path): it is pending
#                                           again and restarts by itself; requeueing again is refused, resubmitting
#                                           would start a second job on the same checkpoint directory
#   JobState=RUNNING                        only signalled (--signal's SIGUSR1, SIGTERM in a preemption's
#                                           GraceTime, scancel --signal=...): requeue
#   JobState=COMPLETING Reason=TimeLimit    the time limit (also the end of a preemption's GraceTime): requeue
#   JobState=COMPLETING PreemptTime=<date>  preempted without GraceTime: requeue
#   JobState=COMPLETING Reason=None         scancel (by the user or an admin; JobState=CANCELLED counts too): the
#                                           job ends CANCELLED, not requeued; the checkpoint stays for a resubmission.
#                                           A plain `scancel` sends the same SIGTERM as the time limit, and Slurm
#                                           22.05 accepts `scontrol requeue` of a job it is ending: that would undo
#                                           the cancel.
# No answer from scontrol: requeue (scontrol requeue then says why it cannot).

# scontrol_field INFO FIELD: the value of FIELD in INFO, the one-line output of `scontrol -o show job` ("" if absent).
scontrol_field() {
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1
}

# requeue_decision INFO RESTART_COUNT: prints `requeued` (Slurm has requeued the job already), `cancelled` or
# `requeue`, as the table above says. A pure function of its arguments, unit-tested with recorded scontrol outputs
# (tests/integration/slurm_requeue_decision.sh).
requeue_decision() {
  local info=$1 started=${2:-0} restarts state reason preempt
  restarts=$(scontrol_field "$info" Restarts)
  state=$(scontrol_field "$info" JobState)
  reason=$(scontrol_field "$info" Reason)
  preempt=$(scontrol_field "$info" PreemptTime)
  if [[ "$restarts" =~ ^[0-9]+$ ]] && [[ "$started" =~ ^[0-9]+$ ]] && [ "$restarts" -gt "$started" ]; then
    echo requeued
  elif { [ "$state" = COMPLETING ] || [ "$state" = CANCELLED ]; } && [ "$reason" = None ] &&
       { [ -z "$preempt" ] || [ "$preempt" = None ]; }; then
    echo cancelled
  else
    echo requeue
  fi
}

# job_held INFO: the job is held (scontrol requeuehold, scontrol hold): it waits for `scontrol release`.
job_held() {
  case "$(scontrol_field "$1" Reason)" in *[Hh]eld*) return 0 ;; *) return 1 ;; esac
}

# saved_step OUT: the step of the last checkpoint ranktune logged as committed in the job's output file OUT ("" if
# none).
saved_step() {
  [ -r "$1" ] || return 0
  grep -a '^preempted: checkpoint committed at step ' "$1" | tail -1 | sed -n 's/^[^0-9]*\([0-9]*\).*/\1/p'
}

# requeue_or_end NAME RC: after the step exited RC, requeues the job or lets it end, and says which, each line
# prefixed NAME ("ranktune-ddp"). The script then exits RC.
requeue_or_end() {
  local name=$1 rc=$2 info="" decision=requeue ending="" preempt at="" what=$2 pending="pending"
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    info=$(scontrol -o show job "$SLURM_JOB_ID" 2>/dev/null) || info=""
  fi
  if [ -n "$info" ]; then
    decision=$(requeue_decision "$info" "${SLURM_RESTART_COUNT:-0}")
    preempt=$(scontrol_field "$info" PreemptTime)
    ending="JobState=$(scontrol_field "$info" JobState) Reason=$(scontrol_field "$info" Reason)"
    [ -z "$preempt" ] || [ "$preempt" = None ] || ending+=" PreemptTime=$preempt"
    # The output file holds every restart's lines: only an exit 75 says that the last save line is this run's.
    [ "$rc" != 75 ] || at=$(saved_step "$(scontrol_field "$info" StdOut)")
  fi
  if [ "$decision" = requeued ]; then
    # Whatever the exit code: Slurm runs this script again, and --resume=auto continues from what was committed.
    [ "$rc" != 75 ] || what="75 (checkpoint saved${at:+ at step $at})"
    job_held "$info" && pending="pending, held until \`scontrol release $SLURM_JOB_ID\`,"
    echo "$name: exit $what; Slurm has already requeued job $SLURM_JOB_ID" \
         "(Restarts=$(scontrol_field "$info" Restarts), $ending): it is $pending and resumes by itself" \
         "(--resume=auto); do not resubmit: two jobs would share one checkpoint directory"
  elif [ "$rc" = 75 ] && [ "$decision" = cancelled ]; then
    echo "$name: exit 75 (checkpoint saved), cancelled by scancel ($ending): not requeueing;" \
         "resubmit to resume from ${at:+step }${at:-that checkpoint} (--resume=auto)"
  elif [ "$rc" = 75 ]; then
    echo "$name: exit 75 (preempted, checkpoint saved): requeueing job $SLURM_JOB_ID to resume${ending:+ ($ending)}"
    scontrol requeue "$SLURM_JOB_ID" || echo "$name: requeue refused; resubmit this script to resume" >&2
  else
    echo "$name: exit $rc"
  fi
}
