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

# Exit 75: a checkpoint was saved because the job was asked to stop. Requeue it to continue, unless it was cancelled:
# a plain `scancel` sends the same SIGTERM as the time limit, and Slurm 22.05 accepts `scontrol requeue` of a job it
# is ending, which would undo the cancel. Slurm's record of the job, read now that the step has ended, tells them
# apart (measured with Slurm 22.05, docs/slurm.md):
#   JobState=RUNNING                        only signalled (--signal's SIGUSR1, SIGTERM in a preemption's
#                                           GraceTime, scancel --signal=...): requeue
#   JobState=COMPLETING Reason=TimeLimit    the time limit (also the end of a preemption's GraceTime): requeue
#   JobState=COMPLETING PreemptTime=<date>  preempted without GraceTime: requeue
#   JobState=COMPLETING Reason=None         scancel (by the user or an admin; JobState=CANCELLED counts too): the
#                                           job ends CANCELLED, not requeued; the checkpoint stays for a resubmission
# No answer from scontrol: requeue (scontrol requeue then says why it cannot).
ending=""
job_stdout=""
cancelled() {
  local info state reason preempt
  [ -n "${SLURM_JOB_ID:-}" ] || return 1
  info=$(scontrol -o show job "$SLURM_JOB_ID" 2>/dev/null | tr ' ' '\n') || return 1
  state=$(sed -n 's/^JobState=//p' <<<"$info" | head -1)
  reason=$(sed -n 's/^Reason=//p' <<<"$info" | head -1)
  preempt=$(sed -n 's/^PreemptTime=//p' <<<"$info" | head -1)
  job_stdout=$(sed -n 's/^StdOut=//p' <<<"$info" | head -1)
  ending="JobState=$state Reason=$reason${preempt:+ PreemptTime=$preempt}"
  case "$state" in COMPLETING | CANCELLED) ;; *) return 1 ;; esac
  [ "$reason" = None ] && { [ -z "$preempt" ] || [ "$preempt" = None ]; }
}
# The step of the checkpoint just committed, as ranktune logged it in this job's output ("" if not found).
saved_step() {
  [ -r "$job_stdout" ] || return 0
  grep -a '^preempted: checkpoint committed at step ' "$job_stdout" | tail -1 | sed -n 's/^[^0-9]*\([0-9]*\).*/\1/p'
}

# requeue_or_end NAME RC: after the step exited RC, requeues the job or lets it end, and says which, each line
# prefixed NAME ("ranktune-ddp"). The script then exits RC.
requeue_or_end() {
  local name=$1 rc=$2 at from why
  if [ "$rc" = 75 ] && cancelled; then
    at=$(saved_step)
    from=${at:+step $at}
    echo "$name: exit 75 (checkpoint saved), cancelled by scancel ($ending): not requeueing;" \
         "resubmit to resume from ${from:-that checkpoint} (--resume=auto)"
  elif [ "$rc" = 75 ]; then
    why=${ending:+ ($ending)}
    echo "$name: exit 75 (preempted, checkpoint saved): requeueing job $SLURM_JOB_ID to resume$why"
    scontrol requeue "$SLURM_JOB_ID" || echo "$name: requeue refused; resubmit this script to resume" >&2
  else
    echo "$name: exit $rc"
  fi
}
