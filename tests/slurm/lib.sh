# Helpers for the Slurm tests: a private Slurm for the whole script (scripts/slurm-harness.sh), submitting the batch
# scripts, reading a job's state from `scontrol show job` (no accounting: sacct has nothing), and the preemption
# cycle. CTest passes RANKTUNE_BIN, RANKTUNE_PROBE, RANKTUNE_SOURCE, RANKTUNE_BUILD, MPIEXEC and MPIEXEC_FLAGS.
# shellcheck source=tests/integration/lib.sh
source "$RANKTUNE_SOURCE/tests/integration/lib.sh"
HARNESS=$RANKTUNE_SOURCE/scripts/slurm-harness.sh
SLURM_UP=0

# Starts Slurm (or exits 77, which CTest reports as skipped, when Slurm or munge is not installed) and stops it on
# exit. Job processes still alive at the end fail the test: they would be orphans on a real cluster.
slurm_up() {
  local why
  if ! why=$(bash "$HARNESS" check); then
    echo "SKIP: $why"
    exit 77
  fi
  local exports
  exports=$(bash "$HARNESS" start) || { echo "FAIL: the Slurm harness did not start"; exit 1; }
  eval "$exports"
  SLURM_UP=1
  trap 'slurm_down; rm -rf "$WORK"' EXIT
  # Jobs inherit this environment (sbatch --export=ALL): keep launcher leftovers of the CTest process out of it.
  unset OMPI_COMM_WORLD_SIZE PMI_SIZE SLURM_JOB_ID
  # The test node advertises 8 CPUs on a 2-core machine: OpenMP threads that spin while they wait (libgomp's default)
  # take the cores from the other ranks' threads, and a 40-step CPU run takes minutes instead of seconds.
  export OMP_WAIT_POLICY=PASSIVE
}

slurm_down() {
  [ "$SLURM_UP" = 1 ] || return 0
  SLURM_UP=0
  local rc=0
  bash "$HARNESS" stop "$RANKTUNE_SLURM_DIR" || rc=$?
  if [ "$rc" = 3 ]; then
    echo "FAIL: job processes outlived their jobs (killed by the harness)"
    exit 1
  fi
}

# Seconds since the epoch with a fraction.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# past T0 LIMIT: more than LIMIT seconds have passed since T0 (from now).
past() { awk -v e="$(elapsed "$1")" -v l="$2" 'BEGIN { exit !(e > l) }'; }

# job_submit NAME SBATCH_ARGS... : submits, prints the job id; the job writes $WORK/NAME.out (appended on requeue).
job_submit() {
  local name=$1
  shift
  local id
  id=$(sbatch --parsable --chdir="$RANKTUNE_SOURCE" --output="$WORK/$name.out" --open-mode=append "$@" | cut -d';' -f1)
  [ -n "$id" ] || { echo "FAIL: sbatch $* was refused" >&2; echo none; return 1; }
  echo "$id"
}

# job_field JOB FIELD: one field of `scontrol show job` (JobState, ExitCode, Restarts, ...).
job_field() {
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

job_state() { job_field "$1" JobState; }

# job_wait_state JOB TIMEOUT STATE...: waits until the job is in one of the states; fails on timeout.
job_wait_state() {
  local job=$1 limit=$2 state="" t0
  shift 2
  t0=$(now)
  while :; do
    state=$(job_state "$job")
    local s
    for s in "$@"; do [ "$state" = "$s" ] && return 0; done
    if past "$t0" "$limit"; then
      fail "job $job: still ${state:-unknown} after ${limit} s (waited for $*)"
      return 1
    fi
    sleep 0.2
  done
}

job_wait_done() { job_wait_state "$1" "${2:-120}" COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY BOOT_FAIL DEADLINE; }

# job_wait_output NAME PATTERN TIMEOUT: waits until the job's output file has a line matching the ERE PATTERN.
job_wait_output() {
  local name=$1 pattern=$2 limit=${3:-60} i
  for ((i = 0; i < limit * 5; i++)); do
    grep -qE -- "$pattern" "$WORK/$name.out" 2>/dev/null && return 0
    sleep 0.2
  done
  fail "$name: no line matching '$pattern' in the job output after $limit s"
  sed 's/^/    /' "$WORK/$name.out" 2>/dev/null | tail -20
  return 1
}

# job_expect JOB STATE EXITCODE RESTARTS: the finished job's state as scontrol reports it.
job_expect() {
  local job=$1 got
  got="$(job_state "$job") $(job_field "$job" ExitCode) restarts=$(job_field "$job" Restarts)"
  if [ "$got" = "$2 $3 restarts=$4" ]; then ok "job $job: $got"; else fail "job $job: $got, expected $2 $3 restarts=$4"; fi
}

# Job processes (steps, tasks) of this Slurm still alive.
job_procs() { bash "$HARNESS" procs "$RANKTUNE_SLURM_DIR"; }

# expect_no_job_procs WITHIN: every process of every job is gone within WITHIN seconds.
expect_no_job_procs() {
  local within=${1:-10} i left
  for ((i = 0; i < within * 5; i++)); do
    left=$(job_procs)
    [ -z "$left" ] && { ok "no job process left"; return 0; }
    sleep 0.2
  done
  fail "job processes still alive ${within} s after the job ended:"
  ps -o pid=,ppid=,stat=,args= -p "$(echo $left | tr ' ' ',')" | sed 's/^/    /'
}

# Slurm's slurmstepd processes of JOB still alive (they are not job processes: job_procs does not list them).
job_stepds() { bash "$HARNESS" stepds "$RANKTUNE_SLURM_DIR" "$1"; }

# job_release_requeued JOB RESTARTS: waits until the job is pending again after its RESTARTS-th requeue and lets it
# start now rather than after Slurm's requeue delay (~120 s). Two things must be over first, else the restart runs
# nothing:
# - the previous run's slurmstepd processes. The job is PENDING again while they still finalize PMIx (2-3 s, more on
#   a loaded machine), holding the spool sockets named after JOB.STEP. The restart reuses the step ids, so its step
#   fails to launch ("Cannot bind() UNIX socket .../stepd.slurm.pmix.JOB.0: Address already in use" in slurmd.log,
#   "launch failed" from srun), and srun of Slurm 22.05 then exits 0: the job ends COMPLETED with no rank output.
# - the second of the requeue: slurmd refuses a credential from that second ("Job credential revoked").
job_release_requeued() {
  local job=$1 want=$2 t0 since
  t0=$(now)
  until [ "$(job_state "$job")" = PENDING ] && [ "$(job_field "$job" Restarts)" = "$want" ]; do
    if past "$t0" 120; then
      fail "job $job was not requeued (state $(job_state "$job"), restarts $(job_field "$job" Restarts), want $want)"
      return 1
    fi
    sleep 0.2
  done
  since=$(date +%s)
  ok "job $job requeued (restarts=$want)"
  until [ -z "$(job_stepds "$job")" ] && [ -z "$(job_procs)" ] && [ "$(date +%s)" -gt "$since" ]; do
    if past "$t0" 180; then fail "job $job: the previous run's slurmstepd outlived it: $(job_stepds "$job" | tr '\n' ' ')"; return 1; fi
    sleep 0.2
  done
  scontrol update JobId="$job" StartTime=now
}

# preempt_and_resume NAME JOB AT_PATTERN HOW RESTARTS: when the job output matches AT_PATTERN, signals the job the
# way Slurm's --signal does (HOW=batch: USR1 to the batch shell only, as B:USR1 does, which the script forwards;
# HOW=step: USR1 to every process of the steps), then expects exit 75, a requeue (restart count RESTARTS) and a
# restart that the script launches with --resume=auto.
preempt_and_resume() {
  local name=$1 job=$2 at=$3 how=$4 restarts=$5
  job_wait_output "$name" "$at" 120 || return 1
  if [ "$how" = batch ]; then scancel --batch --signal=USR1 "$job"; else scancel --signal=USR1 "$job"; fi
  job_release_requeued "$job" "$restarts" || return 1
  job_wait_output "$name" "restart $restarts on " 120 || return 1
  ok "$name: preempted at '$at' ($how signal), requeued, restarted"
}

# job_losses NAME: "step S loss L" for every step job NAME logged in $WORK/NAME.out; for a resumed run the last value
# logged for a step wins.
job_losses() {
  sed -nE 's/^step ([0-9]+)\/[0-9]+ loss ([0-9.naife+-]+) .*/\1 \2/p' "$WORK/$1.out" |
    awk '{ v[$1] = $2 } END { for (s in v) print s, v[s] }' | sort -n
}

# train_job NAME: slurm/ddp.sbatch training on $N tasks with the options in $TRAIN_ARGS, output and checkpoints in
# $WORK/NAME; prints the job id.
train_job() {
  local name=$1
  RANKTUNE_ARGS="$(echo $TRAIN_ARGS) --output_dir=$WORK/$name --checkpoint.dir=$WORK/$name/ckpt" \
    job_submit "$name" --ntasks-per-node=$N --gpus-per-node=$N --cpus-per-task=2 slurm/ddp.sbatch
}
