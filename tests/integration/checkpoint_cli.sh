#!/usr/bin/env bash
# `ranktune checkpoint inspect|verify PATH` on the 2-rank fixture: a summary and exit 0 when intact; exit 5 naming
# the file and rank when a copy is damaged; usage errors exit 2.
source "$(dirname "$0")/lib.sh"
: "${RANKTUNE_FIXTURE:?run through ctest}"
FIX=$RANKTUNE_FIXTURE/replicated

run inspect 0 "$RANKTUNE_BIN" checkpoint inspect "$FIX"
expect inspect out "step         7"
expect inspect out "rank_00001.h5  rank 1"
expect inspect out "special.bf16_all_bits  bfloat16  [256, 256]  128.0 KiB"
expect inspect out "rng.cpu  "
expect inspect out ": ok (step 7, 2 file(s)"
# Each file's own record of the run: mode, topology, world size, and the config text in full (indented).
lines inspect out '    mode = "ddp"' 2
lines inspect out '    topology = "fixture"' 2
lines inspect out '    world_size = 2' 2
python3 - "$WORK/inspect.out" <<'PY' && ok "inspect prints the config text in full" || fail "inspect: no full config"
import sys
sys.exit(0 if "  config:\n    [train]\n    lr = 0.001\n    note = Grüße ☃\n" in open(sys.argv[1], encoding="utf-8").read() else 1)
PY

run verify 0 "$RANKTUNE_BIN" checkpoint verify "$FIX/step_00000007"
expect verify out ": ok (step 7, 2 file(s)"

cp -r "$FIX" "$WORK/damaged"
printf '\x01' | dd of="$WORK/damaged/step_00000007/rank_00001.h5" bs=1 seek=3000 conv=notrunc status=none
run verify_damaged 5 "$RANKTUNE_BIN" checkpoint verify "$WORK/damaged"
expect verify_damaged out "rank_00001.h5 (rank 1): crc32c"
expect verify_damaged err "exit 5"

rm "$WORK/damaged/step_00000007/manifest.json"
run verify_uncommitted 5 "$RANKTUNE_BIN" checkpoint verify "$WORK/damaged/step_00000007"
expect verify_uncommitted out "manifest.json is missing"

run no_path 2 "$RANKTUNE_BIN" checkpoint verify
expect no_path err "checkpoint inspect|verify PATH"
run bad_action 2 "$RANKTUNE_BIN" checkpoint frobnicate "$FIX"

finish
