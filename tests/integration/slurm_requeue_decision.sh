# slurm/requeue.sh's decision after the job step ended, without a Slurm: requeue_decision is a pure function of
# `scontrol -o show job` and SLURM_RESTART_COUNT, fed here with outputs recorded inside ddp.sbatch jobs of a real
# Slurm 22.05 (tests/slurm/scontrol/, README.md there says how). Issue #16 point 10: after `scontrol requeue` the
# script said "cancelled by scancel ... resubmit to resume" while Slurm had already requeued the job, and after
# `scontrol requeuehold` it called `scontrol requeue` itself ("requeue refused; resubmit"): a resubmission puts two
# jobs on one checkpoint directory. requeue_or_end is then run whole, with `scontrol` a shell function that answers
# from the recording and logs every requeue it is asked for. The same scenarios on a real Slurm: slurm_requeue_by_slurm.
source "$(dirname "$0")/lib.sh"
: "${RANKTUNE_SOURCE:?run through ctest}"
REC=$RANKTUNE_SOURCE/tests/slurm/scontrol
# shellcheck source=slurm/requeue.sh
source "$RANKTUNE_SOURCE/slurm/requeue.sh"

# fixture  SLURM_RESTART_COUNT of the run that read it  expected decision
while read -r fixture started want; do
  got=$(requeue_decision "$(cat "$REC/$fixture.txt")" "$started")
  if [ "$got" = "$want" ]; then ok "$fixture (restart $started): $got"
  else fail "$fixture (restart $started): $got, expected $want"; fi
done <<'EOF'
usr1-batch 0 requeue
usr1-step 0 requeue
usr1-batch-restart1 1 requeue
timelimit 0 requeue
scancel 0 cancelled
scancel-after-end 0 cancelled
scontrol-requeue 0 requeued
scontrol-requeue-restart1 1 requeued
scontrol-requeuehold 0 requeued
EOF
# The restart count matters, not the value of Restarts alone: a run restarted once that is then cancelled shows
# Restarts=1 and is a cancel; one that is requeued again shows Restarts=2.
cancel_restarted=$(sed 's/ Restarts=0 / Restarts=1 /' "$REC/scancel.txt")
[ "$(requeue_decision "$cancel_restarted" 1)" = cancelled ] \
  && ok "scancel of a restarted run (Restarts=1, restart 1): cancelled" \
  || fail "scancel of a restarted run: $(requeue_decision "$cancel_restarted" 1), expected cancelled"
[ "$(requeue_decision "$(cat "$REC/scontrol-requeue-restart1.txt")" 2)" = cancelled ] \
  && ok "Restarts not above the run's own count: not taken for a requeue" \
  || fail "Restarts=2 read by restart 2 was taken for a requeue"
[ "$(requeue_decision "" 0)" = requeue ] && ok "no answer from scontrol: requeue" \
  || fail "no answer from scontrol: not requeue"

# requeue_or_end as the batch scripts call it. scontrol: `-o show job` prints the recording with StdOut pointing at a
# job output whose last save was step 7; `requeue` is logged and refused for a job Slurm has requeued already, as
# Slurm 22.05 does ("Job is pending execution").
printf '%s\n' "preempted: checkpoint committed at step 3; exit 75" "step 4/9 loss 5.0" \
  "preempted: checkpoint committed at step 7; exit 75 (the batch scripts requeue on it unless the job was cancelled)" \
  >"$WORK/job.out"
scontrol() {
  case "$*" in
    "-o show job $SLURM_JOB_ID") sed "s|StdOut=[^ ]*|StdOut=$WORK/job.out|" "$REC/$FIXTURE.txt" ;;
    "requeue $SLURM_JOB_ID")
      echo "requeue" >>"$WORK/calls"
      if [ "$(requeue_decision "$(cat "$REC/$FIXTURE.txt")" "${SLURM_RESTART_COUNT:-0}")" = requeued ]; then
        echo "Job is pending execution for job $SLURM_JOB_ID" >&2; return 1
      fi ;;
    *) echo "unexpected: scontrol $*" >>"$WORK/calls"; return 1 ;;
  esac
}
# end NAME FIXTURE RESTART_COUNT RC: runs requeue_or_end; $WORK/NAME.out/.err hold what it printed, NAME.calls the
# requeues it asked for.
end_job() {
  local name=$1
  : >"$WORK/calls"
  FIXTURE=$2 SLURM_JOB_ID=$(scontrol_field "$(cat "$REC/$2.txt")" JobId) SLURM_RESTART_COUNT=$3
  [ "$3" != 0 ] || unset SLURM_RESTART_COUNT   # Slurm sets it only from the first restart on
  requeue_or_end ranktune-ddp "$4" >"$WORK/$name.out" 2>"$WORK/$name.err"
  mv "$WORK/calls" "$WORK/$name.calls"
  unset SLURM_JOB_ID SLURM_RESTART_COUNT
}

end_job requeued scontrol-requeue 0 75
expect requeued out "ranktune-ddp: exit 75 (checkpoint saved at step 7); Slurm has already requeued job 1 (Restarts=1,\
 JobState=COMPLETING Reason=None): it is pending and resumes by itself (--resume=auto); do not resubmit: two jobs would\
 share one checkpoint directory"
lines requeued out "resubmit to resume" 0
lines requeued out "cancelled" 0
lines requeued calls "requeue" 0
lines requeued err "refused" 0

end_job requeued_again scontrol-requeue-restart1 1 75
expect requeued_again out \
  "Slurm has already requeued job 1 (Restarts=2, JobState=COMPLETING Reason=None): it is pending"
lines requeued_again calls "requeue" 0

end_job held scontrol-requeuehold 0 75
expect held out "Slurm has already requeued job 4 (Restarts=1, JobState=COMPLETING\
 Reason=job_requeued_in_held_state): it is pending, held until \`scontrol release 4\`, and resumes by itself"
lines held calls "requeue" 0
lines held err "refused" 0

# Requeued while the ranks ended some other way: no save is claimed (the step-7 line is an earlier run's).
end_job requeued_rc1 scontrol-requeue 0 1
expect requeued_rc1 out "ranktune-ddp: exit 1; Slurm has already requeued job 1"
lines requeued_rc1 out "step 7" 0

end_job cancelled scancel 0 75
expect cancelled out "ranktune-ddp: exit 75 (checkpoint saved), cancelled by scancel (JobState=COMPLETING\
 Reason=None): not requeueing; resubmit to resume from step 7 (--resume=auto)"
lines cancelled calls "requeue" 0

end_job timelimit timelimit 0 75
expect timelimit out "ranktune-ddp: exit 75 (preempted, checkpoint saved): requeueing job 1 to resume\
 (JobState=COMPLETING Reason=TimeLimit)"
lines timelimit calls "requeue" 1

end_job usr1 usr1-batch-restart1 1 75
expect usr1 out \
  "ranktune-ddp: exit 75 (preempted, checkpoint saved): requeueing job 2 to resume (JobState=RUNNING Reason=None)"
lines usr1 calls "requeue" 1

end_job failed usr1-step 0 137
expect failed out "ranktune-ddp: exit 137"
lines failed out "requeue" 0
lines failed calls "requeue" 0

finish
