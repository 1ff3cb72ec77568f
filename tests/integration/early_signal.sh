# A SIGUSR1 that arrives while a rank is still starting (issue #16 point 3): before the launcher, the 0.3 s that
# loading LibTorch takes before main installs the handler were a window in which SIGUSR1's default action killed the
# rank (exit 138), and Slurm's "save and requeue" became a FAILED job. Now bin/ranktune blocks SIGUSR1 and execs
# bin/ranktune-main; the signal stays pending until signals_install unblocks it, and is honoured at the first step
# boundary: a checkpoint of step 1 that `checkpoint verify` accepts, exit 75 (docs/slurm.md).
# Cases: one process signalled 20, 50 and 150 ms after exec (the helper reads /proc to tell whether the signal was
# pending behind the mask, i.e. really arrived during loading; at least one trial must be); 2 ranks under mpirun,
# each signalled as soon as it has exec'd ranktune-main; SIGTERM during start-up still ends the process at once; the
# launcher links no heavy library, runs through a symlink, and refuses with exit 127 when ranktune-main is missing;
# ranktune-main runs on its own.
source "$(dirname "$0")/lib.sh"
MAIN=$(dirname "$(readlink -f "$RANKTUNE_BIN")")/ranktune-main
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 --train.log_every=1 --train.steps=40
  --train.warmup_steps=2 --train.micro_batch=2 --train.seq_len=32 --model.num_layers=2 --model.hidden_size=64
  --model.num_heads=4 --model.num_kv_heads=2 --model.intermediate_size=128 --train.eval_every=0
  --checkpoint.every_steps=0)

# signal_at.py DELAY_MS SIGNAL RANKS MARKER OUT ERR CMD...: starts CMD (Popen returns once the child has exec'd),
# and DELAY_MS later sends SIGNAL to it (RANKS=0), or sends SIGNAL to each of RANKS processes whose command line holds
# MARKER as soon as it runs ranktune-main (CMD is mpirun). Prints the exit code (negative: killed by that signal) and
# how many signals were sent while the signal was blocked in the receiver's main thread and then found pending.
cat >"$WORK/signal_at.py" <<'PY'
import os, signal, subprocess, sys, time
delay, sig, ranks, marker, out, err = sys.argv[1:7]
sig, ranks = getattr(signal, sig), int(ranks)
cmd = sys.argv[7:]

def mask(pid, field):
    for line in open(f"/proc/{pid}/task/{pid}/status" if field == "SigBlk" else f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    return 0

def send(pid):  # True when the signal waited behind the mask (sent during loading)
    try:
        blocked = mask(pid, "SigBlk") >> (sig - 1) & 1
        os.kill(pid, sig)
        return bool(blocked and mask(pid, "ShdPnd") >> (sig - 1) & 1)
    except (OSError, ValueError):
        return False

def rank_pids():
    found = []
    for d in os.listdir("/proc"):
        try:
            if (d.isdigit() and marker.encode() in open(f"/proc/{d}/cmdline", "rb").read()
                    and os.path.basename(os.readlink(f"/proc/{d}/exe")) == "ranktune-main"):
                found.append(int(d))
        except OSError:
            pass
    return found

with open(out, "w") as o, open(err, "w") as e:
    p = subprocess.Popen(cmd, stdout=o, stderr=e)
    held = 0
    if ranks == 0:
        time.sleep(float(delay) / 1000)
        held += send(p.pid)
    else:
        done, deadline = set(), time.time() + 60
        while len(done) < ranks and time.time() < deadline and p.poll() is None:
            for pid in set(rank_pids()) - done:
                held += send(pid)
                done.add(pid)
            time.sleep(0.002)
    try:
        rc = p.wait(timeout=180)
    except subprocess.TimeoutExpired:
        p.kill(); rc = "hung"
print(rc, held)
PY

# early NAME DELAY_MS RANKS: SIGUSR1 during start-up; expects exit 75 and a verified checkpoint of step 1.
HELD_TOTAL=0
early() {
  local name=$1 delay=$2 n=$3 cmd rc held latest
  cmd=("$RANKTUNE_BIN" train "${ARGS[@]}" --output_dir="$WORK/$name" --checkpoint.dir="$WORK/$name/ckpt")
  [ "$n" = 0 ] || cmd=("${MPIRUN[@]}" "$n" "${cmd[@]}")
  read -r rc held < <(python3 "$WORK/signal_at.py" "$delay" SIGUSR1 "$n" "--output_dir=$WORK/$name" \
    "$WORK/$name.out" "$WORK/$name.err" "${cmd[@]}")
  HELD_TOTAL=$((HELD_TOTAL + held))
  local what="SIGUSR1 ${delay} ms after exec"
  [ "$n" = 0 ] || what="SIGUSR1 to each of $n ranks as it exec'd ranktune-main"
  if [ "$rc" != 75 ]; then
    fail "$name: $what: exit $rc, expected 75 (-10: killed by SIGUSR1)"; sed 's/^/    /' "$WORK/$name.err" | tail -5
    return
  fi
  ok "$name: $what: exit 75 ($held signal(s) pending behind the launcher's mask at delivery time)"
  expect "$name" out "stop: SIGUSR1 on rank 0: checkpoint and exit at step 1"
  expect "$name" out "preempted: checkpoint committed at step 1;"
  latest=$(cat "$WORK/$name/ckpt/latest" 2>/dev/null)
  [ "$latest" = step_00000001 ] && ok "$name: latest -> $latest" || fail "$name: latest is '$latest'"
  run "$name.verify" 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/$name/ckpt/step_00000001"
}

early usr1_20ms 20 0
early usr1_50ms 50 0
early usr1_150ms 150 0
early usr1_mpirun2 0 2
# The trials prove something only if a signal really arrived before the handler existed.
[ "$HELD_TOTAL" -gt 0 ] && ok "$HELD_TOTAL signal(s) arrived while ranktune-main was still loading" \
  || fail "no signal arrived during loading (the machine is too fast for these delays?): nothing was tested"

# SIGTERM during start-up: nothing to save, so it ends the process at once (docs/slurm.md), launcher or not.
read -r rc _ < <(python3 "$WORK/signal_at.py" 50 SIGTERM 0 - "$WORK/term.out" "$WORK/term.err" \
  "$RANKTUNE_BIN" train "${ARGS[@]}" --output_dir="$WORK/term" --checkpoint.dir="$WORK/term/ckpt")
[ "$rc" = -15 ] && ok "SIGTERM 50 ms after exec: killed by SIGTERM" \
  || fail "SIGTERM 50 ms after exec: exit $rc, expected -15"
[ ! -e "$WORK/term/ckpt/latest" ] && ok "SIGTERM during start-up: no checkpoint" || fail "SIGTERM during start-up saved"

# The launcher loads none of the heavy libraries (those are what take the time it protects).
needed=$(ldd "$RANKTUNE_BIN" | awk '{print $1}' | tr '\n' ' ')
if grep -Eq 'torch|mpi|hdf5|cuda|boost' <<<"$needed"; then fail "the launcher links heavy libraries: $needed"
else ok "the launcher links only: $needed"; fi
mkdir -p "$WORK/link" "$WORK/lonely"
ln -s "$RANKTUNE_BIN" "$WORK/link/ranktune"
run via_symlink 0 "$WORK/link/ranktune" --version
expect via_symlink out "ranktune "
cp "$RANKTUNE_BIN" "$WORK/lonely/ranktune"
run lonely 127 "$WORK/lonely/ranktune" --version
expect lonely err "ranktune: error: cannot start $WORK/lonely/ranktune-main: No such file or directory"
lines lonely err "ranktune: hint: " 1
run main_alone 0 "$MAIN" --version
expect main_alone out "ranktune "
finish
