# Helpers for the integration scripts: CTest passes RANKTUNE_BIN, MPIEXEC and MPIEXEC_FLAGS in the environment.
set -uo pipefail
: "${RANKTUNE_BIN:?run through ctest}"
: "${MPIEXEC:=mpiexec}"
: "${MPIEXEC_FLAGS:=}"
FAILS=0
PASSES=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# For scripts that start runs in the background (`trap kill_runs_and_clean EXIT`): whatever ran with an --output_dir
# under $WORK and was not collected is killed, then $WORK goes (a failed check must not leave a run behind).
kill_runs_and_clean() {
  local p
  for p in $(pgrep -f -- "--output_dir=$WORK/" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$WORK"
}

ok() { PASSES=$((PASSES + 1)); echo "ok: $*"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }

# run NAME EXPECTED_RC CMD...: runs CMD with a ${RUN_TIMEOUT:-120} s guard (a hang is a failure), keeps stdout/stderr in $WORK/NAME.*
run() {
  local name=$1 want=$2
  shift 2
  timeout "${RUN_TIMEOUT:-120}" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  local rc=$?
  if [ "$rc" = 124 ]; then
    fail "$name: hung (killed after ${RUN_TIMEOUT:-120} s); the last lines it wrote:"
    tail -n 5 "$WORK/$name.out" "$WORK/$name.err" | sed 's/^/    /'
    return
  fi
  if [ "$rc" != "$want" ]; then
    fail "$name: exit $rc, expected $want"; sed 's/^/    /' "$WORK/$name.err" | head -20; return
  fi
  ok "$name (exit $rc)"
}

# expect NAME STREAM PATTERN: the saved stream (out|err) of run NAME matches the fixed string PATTERN.
expect() {
  if grep -qF -- "$3" "$WORK/$1.$2"; then ok "$1 $2 has: $3"; else fail "$1 $2 lacks: $3"; sed 's/^/    /' "$WORK/$1.$2" | head -20; fi
}

# lines NAME STREAM PATTERN N: exactly N lines of the stream contain PATTERN.
lines() {
  local got
  got=$(grep -cF -- "$3" "$WORK/$1.$2")
  if [ "$got" = "$4" ]; then ok "$1 $2: $4 line(s) with '$3'"; else fail "$1 $2: $got line(s) with '$3', expected $4"; fi
}

# losses DIR: "step loss" per step from DIR/metrics.jsonl (the last row written for a step wins), each loss as
# Python's repr, so that equal text means bit-identical losses.
losses() { python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line); rows[r["step"]] = r["loss"]
for s in sorted(rows): print(s, repr(rows[s]))' "$1/metrics.jsonl"; }

# "${MPIRUN[@]}" N CMD...: CMD on N ranks.
# shellcheck disable=SC2206
MPIRUN=("$MPIEXEC" $MPIEXEC_FLAGS -n)

finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" = 0 ]
}
