#!/usr/bin/env bash
# A private single-node Slurm on loopback (munged + slurmctld + slurmd, all under one temp dir), for the tests in
# tests/slurm and for trying slurm/*.sbatch on a workstation. Nothing outside that dir is read or written: munged gets
# its own key and socket, the daemons their own ports, spool, state and logs. Runs as root (as CI does).
#
#   eval "$(scripts/slurm-harness.sh start)"    starts, waits until the node is idle, prints
#                                               `export SLURM_CONF=... RANKTUNE_SLURM_DIR=...` for eval
#   scripts/slurm-harness.sh procs DIR          pids of job processes still alive (steps, tasks), one a line
#   scripts/slurm-harness.sh stepds DIR [JOB]   pids of this Slurm's slurmstepd processes (of job JOB), one a line
#   scripts/slurm-harness.sh stop DIR           cancels the jobs, stops the daemons and whatever their jobs left
#                                               behind, removes DIR (RANKTUNE_SLURM_KEEP=1 keeps it); exit 3 if job
#                                               processes had to be killed
#   scripts/slurm-harness.sh check              exit 0 if this machine can run it, else print why and exit 77
#
# The node advertises 8 CPUs (whatever the machine has: SlurmdParameters=config_overrides) and 4 fake GPUs
# (gres on /dev/null and friends), so `sbatch -n4 --gpus-per-node=4` schedules on a 2-core CI box. Every process the
# harness starts, and every task of every job (through TaskProlog), carries RANKTUNE_SLURM_HARNESS=DIR in its
# environment: that is how `procs` and `stop` find them, and why they never touch anything else.
set -euo pipefail

NODE=ci1
NODE_CPUS=${RANKTUNE_SLURM_CPUS:-8}
NODE_GPUS=4

say() { printf 'slurm-harness: %s\n' "$*" >&2; }

# Binaries the harness needs; the tests skip (exit 77) when one is missing.
check() {
  local b missing=()
  for b in munged slurmctld slurmd sinfo sbatch srun scontrol squeue scancel; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "slurm-harness: cannot start a private Slurm: ${missing[*]} not found (Debian: apt-get install slurm-wlm munge," \
         "or RANKTUNE_SETUP_CLUSTER=1 scripts/setup.sh)"
    return 77
  fi
}

# Two distinct TCP ports nobody listens on, from a range away from Slurm's defaults (6817/6818) and the
# ephemeral range.
free_ports() {
  local got=() p tries=0
  while [ "${#got[@]}" -lt 2 ] && [ "$tries" -lt 200 ]; do
    tries=$((tries + 1))
    p=$((20000 + RANDOM % 12000))
    [ "${#got[@]}" -eq 1 ] && [ "${got[0]}" = "$p" ] && continue
    if [ -z "$(ss -Htanl "sport = :$p" 2>/dev/null)" ]; then got+=("$p"); fi
  done
  [ "${#got[@]}" -eq 2 ] || { say "no free TCP port found in 20000-31999"; return 1; }
  echo "${got[@]}"
}

write_config() {
  local dir=$1 host ctld_port slurmd_port
  host=$(hostname -s)
  read -r ctld_port slurmd_port < <(free_ports)
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/log" "$dir/tmp"
  cat >"$dir/task-prolog.sh" <<EOF
#!/bin/sh
echo "export RANKTUNE_SLURM_HARNESS=$dir"
EOF
  chmod 755 "$dir/task-prolog.sh"
  # The cluster name is unique per start: a state dir left by another cluster would make slurmctld refuse.
  # TmpFS is where PMIx puts each step's client dir, spmix_appdir_<uid>_<job>.<step>: under /tmp, one left by a
  # killed step of an earlier cluster (job ids start at 1 in every cluster) made that step id fail to launch
  # ("Cannot create client cli tmpdir ... File exists").
  cat >"$dir/slurm.conf" <<EOF
ClusterName=rt$(date +%s)$RANDOM
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$dir/task-prolog.sh
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=3600
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
TmpFS=$dir/tmp
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=2000 Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  local devs=(/dev/null /dev/zero /dev/full /dev/urandom) i
  : >"$dir/gres.conf"
  for ((i = 0; i < NODE_GPUS; i++)); do
    echo "NodeName=$NODE Name=gpu File=${devs[$i]}" >>"$dir/gres.conf"
  done
}

# munged insists on a key readable by its owner only and a socket dir everyone can traverse.
start_munge() {
  local dir=$1
  chmod 755 "$dir" "$dir/munge"
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  env RANKTUNE_SLURM_HARNESS="$dir" munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    </dev/null >>"$dir/log/daemons.out" 2>&1
}

wait_idle() {
  local dir=$1 state="" i
  for ((i = 0; i < 120; i++)); do
    state=$(SLURM_CONF="$dir/slurm.conf" sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && return 0
    sleep 0.5
  done
  say "node $NODE did not become idle within 60 s (state: '${state:-no answer}')"
  return 1
}

show_logs() {
  local f
  for f in "$1"/log/*; do
    [ -s "$f" ] || continue
    say "--- tail of $f"
    tail -n 15 "$f" >&2
  done
}

start() {
  check || exit $?
  local dir=${1:-}
  if [ -z "$dir" ]; then dir=$(mktemp -d "${TMPDIR:-/tmp}/ranktune-slurm.XXXXXX"); fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  write_config "$dir"
  if ! start_munge "$dir"; then show_logs "$dir"; stop "$dir" >/dev/null 2>&1 || true; exit 1; fi
  local conf=$dir/slurm.conf
  if ! env RANKTUNE_SLURM_HARNESS="$dir" SLURM_CONF="$conf" slurmctld -c -f "$conf" \
         </dev/null >>"$dir/log/daemons.out" 2>&1 ||
     ! env RANKTUNE_SLURM_HARNESS="$dir" SLURM_CONF="$conf" slurmd -N "$NODE" -f "$conf" \
         </dev/null >>"$dir/log/daemons.out" 2>&1 ||
     ! wait_idle "$dir"; then
    show_logs "$dir"
    stop "$dir" >/dev/null 2>&1 || true
    exit 1
  fi
  say "Slurm is up in $dir ($(grep -E '^Slurm(ctld|d)Port' "$conf" | tr '\n' ' '))"
  printf 'export SLURM_CONF=%q RANKTUNE_SLURM_DIR=%q\n' "$conf" "$dir"
}

# Every process carrying the marker, daemons included.
marked_pids() {
  local dir=$1 p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if grep -qzxF "RANKTUNE_SLURM_HARNESS=$dir" "$p/environ" 2>/dev/null; then echo "${p#/proc/}"; fi
  done
}

daemon_pids() {
  local dir=$1 f
  for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$f" ] && cat "$f"
  done
  return 0
}

# Job processes: marked, not one of the daemons.
procs() {
  local dir=${1:?procs DIR}
  dir=$(cd "$dir" && pwd)
  local daemons
  daemons=" $(daemon_pids "$dir" | tr '\n' ' ') "
  marked_pids "$dir" | while read -r p; do
    case "$daemons" in *" $p "*) ;; *) echo "$p" ;; esac
  done
}

# slurmstepd does not keep the marker (slurmd starts it with a clean environment), but it inherits slurmd's log file
# and working directory, both inside DIR. A step's slurmstepd outlives its tasks by a few seconds (PMIx finalize),
# and while it lives it holds the step's sockets in the spool dir: a requeued job started again in that window gets
# the same step ids and its steps fail to launch (see job_release_requeued in tests/slurm/lib.sh).
stepds() {
  local dir=${1:?stepds DIR [JOB]} job=${2:-} p args
  dir=$(cd "$dir" && pwd)
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$dir"/*) ;; *) continue ;; esac
    args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)
    if [ -n "$job" ]; then case "$args" in *"[$job."*) ;; *) continue ;; esac; fi
    echo "${p#/proc/}"
  done
}

# Sends TERM, waits up to $2 seconds, then KILL.
end_pids() {
  local grace=$1 i p alive
  shift
  [ "$#" -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

stop() {
  local dir=${1:?stop DIR}
  [ -d "$dir" ] || { say "no such harness dir: $dir"; return 1; }
  dir=$(cd "$dir" && pwd)
  local conf=$dir/slurm.conf rc=0 i
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    # shellcheck disable=SC2046  # one argument per job id
    SLURM_CONF=$conf scancel --full --quiet $(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null) 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      [ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  local left
  left=$(procs "$dir")
  # slurmstepd ends a moment after its job leaves the queue: give it that moment before calling anything an orphan.
  for ((i = 0; i < 50 && ${#left} > 0; i++)); do
    sleep 0.2
    left=$(procs "$dir")
  done
  if [ -n "$left" ]; then
    say "job processes still alive after their jobs ended, killing them: $(echo $left)"
    ps -o pid=,ppid=,stat=,args= -p "$(echo $left | tr ' ' ',')" >&2 || true
    end_pids 5 $left
    rc=3
  fi
  # shellcheck disable=SC2046  # one argument per pid
  end_pids 10 $(daemon_pids "$dir")
  # Anything marked that is still here (a daemon whose pid file was never written) goes the same way.
  # shellcheck disable=SC2046
  end_pids 5 $(marked_pids "$dir")
  if [ "${RANKTUNE_SLURM_KEEP:-0}" = 1 ]; then say "kept $dir"; else rm -rf "$dir"; fi
  return "$rc"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  procs) procs "${2:-}" ;;
  stepds) stepds "${2:-}" "${3:-}" ;;
  check) check ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
