#!/usr/bin/env bash
# SIGUSR1 to mpirun reaches ranktune on this machine's Open MPI: the tiny CPU job stops at a step boundary with a
# committed checkpoint and exit 75, then resumes. (Part of bench/gpu_check.sh runs; the CTest version is
# tests/integration/train_resume.sh.)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-${RANKTUNE_BIN_DIR:-build-gpu/bin}/ranktune}
dir=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --config configs/tiny.ini --device=cpu --train.steps=200 --train.log_every=1 --output_dir="$dir/run"
      --checkpoint.dir="$dir/ckpt" --checkpoint.every_steps=0)
mpirun -np 2 --oversubscribe "$bin" "${args[@]}" --train.micro_batch=4 >"$dir/out" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && ! grep -q '^step 20/' "$dir/out"; do sleep 0.01; done
kill -USR1 "$pid"
wait "$pid"; echo "after SIGUSR1 at step 20: exit $? ($(grep -E '^(stop|preempted)' "$dir/out" | tr '\n' ' '))"
grep -c '^step ' "$dir/out" | sed 's/^/step lines logged: /'; grep -E '^step (1|20|21|200)/' "$dir/out" | cut -c1-60
mpirun -np 2 --oversubscribe "$bin" "${args[@]}" --train.micro_batch=4 --resume=auto >"$dir/out2" 2>&1
echo "resume: exit $? ($(grep -E '^resume:|^done:' "$dir/out2" | tr '\n' ' '))"
rm -rf "$dir"
