# SIGTERM is a best-effort save (issue #8): a `ranktune train` run that gets SIGTERM in the middle of training stops
# at the next step boundary, commits a checkpoint of that step, and exits 75 ("preempted, checkpoint saved",
# docs/exit-codes.md); the checkpoint passes `ranktune checkpoint verify`, and `--resume=auto` continues from that
# step with the same loss at every step as an uninterrupted run (CPU: bit-identical).
# Cases: one process (no mpirun); 2 ranks under mpirun with SIGTERM to every rank process, as Slurm signals every
# process of a step; 2 ranks with SIGTERM to one rank only (the ranks agree on the stop at the step boundary).
# No periodic checkpoints (checkpoint.every_steps=0): a checkpoint before the last step can only be the SIGTERM save.
# SIGTERM during start-up, before the step loop, ends the process at once (nothing to save): not tested here.
# One case repeats SIGTERM every 20 ms until the process exits (a second SIGTERM from Slurm, mpirun forwarding it, or
# an impatient user): once the stop's checkpoint is committed the process must still exit 75, not die by the signal
# (143), which nothing would requeue (Trainer::run keeps the SIGTERM hold after a stop).
source "$(dirname "$0")/lib.sh"
STEPS=${RANKTUNE_SIGTERM_STEPS:-300}
# Seconds a stopped run may take from the signal to its exit; Slurm's KillWait is 30-60 s on typical sites.
STOP_LIMIT=${RANKTUNE_SIGTERM_LIMIT:-30}
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=11 --train.log_every=1 --train.steps="$STEPS"
  --train.warmup_steps=4 --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64
  --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0
  --checkpoint.every_steps=0)
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
BG=""   # the run in the background (mpirun, or ranktune itself for one process)

trap kill_runs_and_clean EXIT  # what the script started and did not collect is killed on exit


# train NAME RANKS EXTRA...: in $WORK/NAME, stdout/stderr appended to $WORK/NAME.out/.err; RANKS=0: no mpirun.
train() {
  local name=$1 n=$2; shift 2
  local cmd=("$RANKTUNE_BIN" train "${ARGS[@]}" --output_dir="$WORK/$name" --checkpoint.dir="$WORK/$name/ckpt" "$@")
  [ "$n" = 0 ] || cmd=("${MPIRUN[@]}" "$n" "${cmd[@]}")
  exec timeout "$RUN_TIMEOUT" "${cmd[@]}" >>"$WORK/$name.out" 2>>"$WORK/$name.err"
}

# rank_pids NAME: pids of the ranktune processes of run NAME (not mpirun, not timeout).
rank_pids() {
  local p bin
  bin=$(dirname "$(readlink -f "$RANKTUNE_BIN")")/ranktune-main  # what the launcher bin/ranktune execs
  for p in $(pgrep -f -- "--output_dir=$WORK/$1 "); do
    [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$bin" ] && echo "$p"
  done | sort -u
}

# wait_step NAME STEP: waits (while the run lives) until rank 0 has logged STEP; once it has, every rank is inside
# the step loop, where SIGTERM is held for a save (rank 0 finished a step, and each step has collectives).
wait_step() {
  local i
  for ((i = 0; i < RUN_TIMEOUT * 20; i++)); do
    grep -q "^step $2/" "$WORK/$1.out" 2>/dev/null && return 0
    kill -0 "$BG" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

reference() {  # reference NAME RANKS
  (train "$1" "$2") && ok "$1: uninterrupted run of $STEPS steps on $(( $2 > 0 ? $2 : 1 )) process(es)" \
    || { fail "$1: reference run failed"; sed 's/^/    /' "$WORK/$1.err" | tail -5; }
  losses "$WORK/$1" >"$WORK/$1.loss"
  [ "$(wc -l <"$WORK/$1.loss")" = "$STEPS" ] || fail "$1: $(wc -l <"$WORK/$1.loss") steps in the metrics, expected $STEPS"
}

# sigterm_case NAME RANKS WHO REF: starts a run, sends SIGTERM once a random step is logged (WHO=all: to every rank
# process; WHO=one: to one random rank; WHO=repeat: to every rank, again every 20 ms until they exit), then checks
# the stop, the checkpoint, the exit code and the resume.
sigterm_case() {
  local name=$1 n=$2 who=$3 ref=$4 target pids victims p t0 rc took stopped latest want_rank="" rep=""
  target=$((3 + RANDOM % 38))
  (train "$name" "$n") &
  BG=$!
  if ! wait_step "$name" "$target"; then
    fail "$name: the run never logged step $target"; sed 's/^/    /' "$WORK/$name.err" | tail -5; return
  fi
  mapfile -t pids < <(rank_pids "$name")
  if [ "${#pids[@]}" != "$(( n > 0 ? n : 1 ))" ]; then
    fail "$name: found ${#pids[@]} rank process(es) (${pids[*]}), expected $(( n > 0 ? n : 1 ))"; kill -KILL "$BG"; wait "$BG"; return
  fi
  victims=("${pids[@]}")
  if [ "$who" = one ]; then
    victims=("${pids[RANDOM % ${#pids[@]}]}")
    want_rank=$(tr '\0' '\n' <"/proc/${victims[0]}/environ" | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  fi
  t0=$(date +%s.%N)
  for p in "${victims[@]}"; do kill -TERM "$p"; done
  if [ "$who" = repeat ]; then
    (
      bin=$(dirname "$(readlink -f "$RANKTUNE_BIN")")/ranktune-main
      while :; do
        sleep 0.02
        for p in "${victims[@]}"; do
          [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$bin" ] && kill -TERM "$p" 2>/dev/null
        done
      done
    ) &
    rep=$!
  fi
  wait "$BG"; rc=$?
  [ -z "$rep" ] || { kill "$rep"; wait "$rep"; } 2>/dev/null
  took=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
  BG=""
  stopped=$(sed -nE 's/^preempted: checkpoint committed at step ([0-9]+);.*/\1/p' "$WORK/$name.out")
  if [ "$rc" = 75 ]; then ok "$name: exit 75 ${took} s after SIGTERM to ${#victims[@]} of ${#pids[@]} rank(s) (logged step $target)"
  else fail "$name: exit $rc ${took} s after SIGTERM (expected 75)"; sed 's/^/    /' "$WORK/$name.err" | tail -8; return; fi
  python3 -c "import sys; sys.exit(0 if $took < $STOP_LIMIT else 1)" && ok "$name: stopped within $STOP_LIMIT s" \
    || fail "$name: took $took s to stop (limit $STOP_LIMIT s, a KillWait would have killed it)"
  if [ -n "$stopped" ] && [ "$stopped" -gt "$target" ] && [ "$stopped" -lt "$STEPS" ] &&
     grep -qE "^stop: SIGTERM on rank ${want_rank:-[0-9]+}: best-effort save and exit at step $stopped\$" "$WORK/$name.out"; then
    ok "$name: $(grep '^stop: ' "$WORK/$name.out"); committed step $stopped"
  else
    fail "$name: signalled after step $target, committed step '${stopped:-none}'"
    grep -E '^(stop|preempted|checkpoint):' "$WORK/$name.out" | sed 's/^/    /'; return
  fi
  lines "$name" out "checkpoint: step " 1   # the SIGTERM save, and no other
  latest=$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)
  [ "$latest" = "$(printf 'step_%08d' "$stopped")" ] && ok "$name: latest -> $latest" || fail "$name: latest is '$latest'"
  if "$RANKTUNE_BIN" checkpoint verify "$WORK/$name/ckpt/$(printf 'step_%08d' "$stopped")" >"$WORK/$name.verify" 2>&1; then
    ok "$name: checkpoint verify: $(head -1 "$WORK/$name.verify")"
  else
    fail "$name: checkpoint verify of step $stopped failed"; sed 's/^/    /' "$WORK/$name.verify"
  fi
  # The run reported its metrics up to the stop step only.
  [ "$(losses "$WORK/$name" | tail -1 | cut -d' ' -f1)" = "$stopped" ] && ok "$name: metrics end at step $stopped" \
    || fail "$name: metrics end at step $(losses "$WORK/$name" | tail -1 | cut -d' ' -f1), not $stopped"
  [ -z "$(rank_pids "$name")" ] && ok "$name: no rank left running" || fail "$name: ranks left running: $(rank_pids "$name")"

  # Resume: the same command with --resume=auto.
  mv "$WORK/$name.out" "$WORK/$name.first.out"
  if ! (train "$name" "$n" --resume=auto); then fail "$name: resume failed"; sed 's/^/    /' "$WORK/$name.err" | tail -5; return; fi
  local first
  first=$(sed -nE 's/^step ([0-9]+)\/.*/\1/p' "$WORK/$name.out" | head -1)
  if grep -qE "^resume: .*/step_0*$stopped \(step $stopped," "$WORK/$name.out" && [ "$first" = $((stopped + 1)) ]; then
    ok "$name: --resume=auto read step $stopped and went on at step $first"
  else
    fail "$name: did not resume from step $stopped (first step '${first:-none}')"; grep '^resume:' "$WORK/$name.out" | sed 's/^/    /'
  fi
  if cmp -s <(losses "$WORK/$name") "$WORK/$ref.loss"; then
    ok "$name: loss of all $STEPS steps identical to the uninterrupted run"
  else
    fail "$name: losses differ from the uninterrupted run"; diff <(losses "$WORK/$name") "$WORK/$ref.loss" | head -5 | sed 's/^/    /'
  fi
}

T0=$(date +%s)
reference ref1 0
sigterm_case single 0 all ref1
sigterm_case repeated 0 repeat ref1
reference ref2 2
sigterm_case mpirun2_all 2 all ref2
sigterm_case mpirun2_one 2 one ref2
echo "took $(( $(date +%s) - T0 )) s"
finish
