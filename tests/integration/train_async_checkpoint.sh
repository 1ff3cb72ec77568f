# checkpoint.async in real runs (docs/checkpoint-format.md, "Asynchronous saves"), tiny model on CPU:
# - at 1 and 2 ranks, the periodic saves of an async run hold exactly the tensors, blobs and integers of a sync run's
#   (read back with h5py), the losses are the same, and a resume from the async run's step 6 continues with the
#   uninterrupted run's losses bit for bit;
# - a failure injected in the background write (test hook RANKTUNE_TEST_SAVE_FAULT) is reported as a failed save,
#   training goes on (exit 0) and `latest` stays on the previous checkpoint;
# - kill -9 while the background write is held (sleep hook) leaves `latest` on the previous checkpoint, which
#   verifies, and --resume=auto continues from it bit-identically;
# - SIGTERM (1 rank) and SIGUSR1 to mpirun (2 ranks) during the background write: the pending save commits, then the
#   stop's save, exit 75;
# - too little host memory (test hook RANKTUNE_TEST_MEM_AVAILABLE_MB) saves synchronously, said in one line;
# - the review of #19 (test hook RANKTUNE_TEST_ASYNC_FAULT): a non-finite gradient norm while a background save is
#   pending commits that save before the run fails (1 and 2 ranks, the fault on rank 0 only); a staging allocation
#   that fails saves each step synchronously; an HDF5 that is not thread-safe on one rank turns async off everywhere.
source "$(dirname "$0")/lib.sh"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=7 --train.log_every=1 --train.warmup_steps=2
  --train.seq_len=64 --model.num_layers=2 --model.hidden_size=128 --model.num_heads=4 --model.num_kv_heads=2
  --model.intermediate_size=256 --train.eval_every=0 --checkpoint.every_steps=3 --checkpoint.keep=10)
export OMP_NUM_THREADS=1

trap kill_runs_and_clean EXIT

# train NAME RANKS EXTRA...: in $WORK/NAME (checkpoints in $WORK/NAME/ckpt); RANKS=0: no mpirun; RUN_ENV: VAR=VALUE
# words for its environment. exec: run it in a subshell, in the background or not.
train() {
  local name=$1 n=$2; shift 2
  local cmd=("$RANKTUNE_BIN" train "${ARGS[@]}" --train.micro_batch=$((4 / (n > 0 ? n : 1))) --output_dir="$WORK/$name"
    --checkpoint.dir="$WORK/$name/ckpt" "$@")
  [ "$n" = 0 ] || cmd=("${MPIRUN[@]}" "$n" "${cmd[@]}")
  # shellcheck disable=SC2086
  exec env ${RUN_ENV:-} timeout 120 "${cmd[@]}" >>"$WORK/$name.out" 2>>"$WORK/$name.err"
}
trained() {  # trained NAME RANKS WANT_RC EXTRA...: runs train, checks the exit code
  local name=$1 n=$2 want=$3; shift 3
  (train "$name" "$n" "$@"); local rc=$?
  [ "$rc" = "$want" ] && ok "$name: exit $rc" || { fail "$name: exit $rc, expected $want"; tail -5 "$WORK/$name.err" | sed 's/^/    /'; }
}
step_dir() { printf '%s/ckpt/step_%08d' "$WORK/$1" "$2"; }

# same_state A B STEP RANKS: every dataset and integer attribute of each rank file of step STEP equal, bit for bit.
same_state() {
  python3 - "$(step_dir "$1" "$3")" "$(step_dir "$2" "$3")" "$4" <<'PY'
import sys, h5py, numpy as np
a_dir, b_dir, ranks = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = 0
for r in range(ranks):
    a, b = h5py.File(f"{a_dir}/rank_{r:05d}.h5", "r"), h5py.File(f"{b_dir}/rank_{r:05d}.h5", "r")
    names = []
    a.visititems(lambda k, o: names.append(k) if isinstance(o, h5py.Dataset) and not k.startswith("_types") else None)
    other = []
    b.visititems(lambda k, o: other.append(k) if isinstance(o, h5py.Dataset) and not k.startswith("_types") else None)
    assert sorted(names) == sorted(other), f"rank {r}: datasets differ"
    for k in names:
        x, y = a[k][()], b[k][()]
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), f"rank {r}: {k} differs"
        n += 1
    for k, v in a.attrs.items():
        if isinstance(v, (int, np.integer)):
            assert b.attrs[k] == v, f"rank {r}: attribute {k}"
print(f"  {n} datasets equal")
PY
}

for n in 0 2; do
  label=$([ "$n" = 0 ] && echo "1 rank" || echo "2 ranks")
  trained "sync$n" "$n" 0 --train.steps=12
  trained "async$n" "$n" 0 --train.steps=12 --checkpoint.async=true
  for s in 3 6 9; do
    expect "async$n" out "checkpoint: staged step $s "
    expect "async$n" out "checkpoint timing: step $s async: stall"
  done
  expect "async$n" out "checkpoint timing: step 12 sync: stall"  # the save after the last step
  lines "async$n" out "checkpoint: step " 4
  for s in 3 6 9 12; do
    same_state "sync$n" "async$n" "$s" "$([ "$n" = 0 ] && echo 1 || echo 2)" && ok "$label: step $s async = sync" \
      || fail "$label: step $s of the async run differs from the sync run's"
    run "verify$n.$s" 0 "$RANKTUNE_BIN" checkpoint verify "$(step_dir "async$n" "$s")"
  done
  cmp -s <(losses "$WORK/sync$n") <(losses "$WORK/async$n") && ok "$label: async run's losses = sync run's" \
    || fail "$label: losses differ"
  # Resume from the async run's step 6 into a fresh directory: steps 7-12 as the uninterrupted run.
  trained "resumed$n" "$n" 0 --train.steps=12 --checkpoint.async=true --resume="$(step_dir "async$n" 6)"
  cmp -s <(losses "$WORK/resumed$n") <(losses "$WORK/sync$n" | awk '$1 > 6') \
    && ok "$label: resumed from async step 6, steps 7-12 bit-identical" || fail "$label: resume from async step 6 differs"
done

# A failure in the background write of step 6: reported, training goes on, `latest` stays on step 3.
RUN_ENV=RANKTUNE_TEST_SAVE_FAULT=0:6:rank_file_synced:fail trained fault 0 0 --train.steps=7 --checkpoint.at_end=false \
  --checkpoint.async=true
expect fault out "WARNING: checkpoint of step 6 failed, training goes on: checkpoint save of step 6 failed: rank 0: $(step_dir fault 6)/rank_00000.h5 (rank 0): RANKTUNE_TEST_SAVE_FAULT: rank 0 fails the save of step 6 at rank_file_synced"
expect fault out "done: 7 steps"
[ "$(cat "$WORK/fault/ckpt/latest")" = step_00000003 ] && ok "fault: latest names step 3" || fail "fault: latest moved"
[ ! -e "$(step_dir fault 6)" ] && ok "fault: nothing of step 6 is left" || fail "fault: step 6 left behind"

# wait_for NAME PATTERN PID: until the run's stdout has PATTERN (regex), while PID lives.
wait_for() {
  local i
  for ((i = 0; i < 1200; i++)); do
    grep -qE "$2" "$WORK/$1.out" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
rank_pid() {  # the ranktune-main process of run NAME
  local bin p
  bin=$(dirname "$(readlink -f "$RANKTUNE_BIN")")/ranktune-main
  for p in $(pgrep -f -- "--output_dir=$WORK/$1 "); do
    [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$bin" ] && echo "$p"
  done | head -1
}

# kill -9 while step 6's file is held in the background write (training goes on meanwhile: step 8 is logged).
(RUN_ENV=RANKTUNE_TEST_SAVE_FAULT=0:6:rank_file_written:sleep=30000 train killed 0 --train.steps=12 --checkpoint.async=true) &
bg=$!
if wait_for killed '^step 8/' "$bg"; then
  ok "killed: steps 7-8 trained while step 6 was being written"
  kill -KILL "$(rank_pid killed)"; wait "$bg"; rc=$?
  [ "$rc" = 137 ] && ok "killed: exit 137" || fail "killed: exit $rc"
  [ "$(cat "$WORK/killed/ckpt/latest")" = step_00000003 ] && ok "killed: latest still names step 3" || fail "killed: latest moved"
  [ ! -e "$(step_dir killed 6)/manifest.json" ] && ok "killed: step 6 not committed" || fail "killed: step 6 committed"
  run verify_killed 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/killed/ckpt"
  expect verify_killed out ": ok (step 3,"
  mv "$WORK/killed.out" "$WORK/killed.first.out"
  trained killed 0 0 --train.steps=12 --checkpoint.async=true --resume=auto
  cmp -s <(losses "$WORK/killed") <(losses "$WORK/sync0") && ok "killed: resumed from step 3, losses bit-identical" \
    || fail "killed: resumed losses differ"
else
  fail "killed: never reached step 8"; kill -KILL "$bg"; wait "$bg"
fi

# stop_case NAME RANKS SIGNAL: the signal while step 6 is held in the background write (2 s); the run must commit
# step 6, then its stop step, and exit 75.
stop_case() {
  local name=$1 n=$2 sig=$3 target rc stopped
  (RUN_ENV=RANKTUNE_TEST_SAVE_FAULT=0:6:rank_file_written:sleep=2000 train "$name" "$n" --train.steps=100000 \
    --checkpoint.async=true) &
  bg=$!
  if ! wait_for "$name" '^step 7/' "$bg"; then fail "$name: never reached step 7"; kill -KILL "$bg"; wait "$bg"; return; fi
  target=$(pgrep -P "$bg" | head -1)  # mpirun, the child of timeout
  [ "$n" = 0 ] && target=$(rank_pid "$name")
  kill "-$sig" "$target"; wait "$bg"; rc=$?
  [ "$rc" = 75 ] && ok "$name: exit 75 after $sig during the background write" || { fail "$name: exit $rc"; tail -5 "$WORK/$name.err"; return; }
  expect "$name" out "checkpoint: step 6 -> $(step_dir "$name" 6)"
  stopped=$(sed -nE 's/^preempted: checkpoint committed at step ([0-9]+);.*/\1/p' "$WORK/$name.out")
  [ -n "$stopped" ] && [ "$stopped" -gt 6 ] && [ "$(cat "$WORK/$name/ckpt/latest")" = "$(printf step_%08d "$stopped")" ] \
    && ok "$name: step 6 committed, then the stop's step $stopped; latest names it" || fail "$name: stopped at '$stopped'"
  run "verify_$name" 0 "$RANKTUNE_BIN" checkpoint verify "$(step_dir "$name" 6)"
  run "verify_${name}_stop" 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/$name/ckpt"
}
stop_case sigterm 0 TERM
stop_case sigusr1 2 USR1

# Host memory short (the test hook says 1 MB available): every periodic save is synchronous, said once per save.
RUN_ENV=RANKTUNE_TEST_MEM_AVAILABLE_MB=1 trained lowmem 2 0 --train.steps=12 --checkpoint.async=true --checkpoint.at_end=false
lines lowmem out "saved synchronously, host memory is short for checkpoint.async: rank 0: staging needs" 3
expect lowmem out "checkpoint timing: step 6 sync:"
same_state sync2 lowmem 6 2 && ok "lowmem: step 6 = the sync run's" || fail "lowmem: step 6 differs"

# A NaN gradient norm at step 4 (rank 0 only) while step 3's background write is held: step 3 predates the bad step
# and a synchronous run would have committed it, so it commits before the error ends the run.
for n in 0 2; do
  name=nan$n
  RUN_ENV="RANKTUNE_TEST_SAVE_FAULT=0:3:rank_file_written:sleep=1500 RANKTUNE_TEST_FAIL_AT_STEP=0:4:nan_grad" \
    trained "$name" "$n" 1 --train.steps=12 --checkpoint.async=true
  expect "$name" err "gradient norm became"
  expect "$name" out "checkpoint: step 3 -> $(step_dir "$name" 3)"
  [ "$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)" = step_00000003 ] && ok "$name: latest names step 3" \
    || fail "$name: latest is '$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)', expected step_00000003"
  run "verify_$name" 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/$name/ckpt"
done

# Staging that cannot allocate (a refused pinned allocation): steps 3 and 6 are saved synchronously, not lost.
RUN_ENV=RANKTUNE_TEST_ASYNC_FAULT=0:stage_alloc trained stagefail 0 0 --train.steps=7 --checkpoint.async=true \
  --checkpoint.at_end=false
lines stagefail out "saved synchronously, staging for checkpoint.async failed on rank 0: RANKTUNE_TEST_ASYNC_FAULT" 2
[ "$(cat "$WORK/stagefail/ckpt/latest" 2>/dev/null)" = step_00000006 ] && ok "stagefail: latest names step 6" \
  || fail "stagefail: latest is not step 6"

# HDF5 not thread-safe on rank 1: one warning naming the fix, every save synchronous on both ranks.
RUN_ENV=RANKTUNE_TEST_ASYNC_FAULT=1:h5_not_threadsafe trained not_threadsafe 2 0 --train.steps=4 \
  --checkpoint.async=true --checkpoint.at_end=false
lines not_threadsafe out "WARNING: checkpoint.async is off, every save is synchronous: rank 1: the HDF5 library" 1
expect not_threadsafe out "built with --enable-threadsafe"
expect not_threadsafe out "checkpoint timing: step 3 sync:"
finish
