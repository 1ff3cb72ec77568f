# Bad input through the real binary: one error line on stderr naming the culprit, a hint, exit code 2.
source "$(dirname "$0")/lib.sh"

run version 0 "$RANKTUNE_BIN" --version
expect version out "ranktune 0."
expect version out "LibTorch"
run help 0 "$RANKTUNE_BIN" train --help
expect help out "--train.lr"
expect help out "--parallel.mode"

run missing_file 2 "$RANKTUNE_BIN" topology --device=cpu --config "$WORK/nope.ini"
expect missing_file err "config file '$WORK/nope.ini' cannot be opened"
lines missing_file err "error:" 1

printf '[train]\nlr = 1e-3\nstpes = 3\n' >"$WORK/unknown.ini"
run unknown_key 2 "$RANKTUNE_BIN" topology --device=cpu --config "$WORK/unknown.ini"
expect unknown_key err "$WORK/unknown.ini:3: unknown key 'train.stpes'"
expect unknown_key err "hint: did you mean 'train.steps'?"

printf '[train]\nthis is not a setting\n' >"$WORK/malformed.ini"
run malformed 2 "$RANKTUNE_BIN" topology --device=cpu --config "$WORK/malformed.ini"
expect malformed err "malformed.ini:2: malformed line"

run guessing_off 2 "$RANKTUNE_BIN" topology --device=cpu --train.ste 3
expect guessing_off err "unknown option '--train.ste'"

run bad_value 2 "$RANKTUNE_BIN" topology --device=cpu --train.lr=fast
expect bad_value err "command line --train.lr: bad value 'fast' for train.lr: expected a number"

run bad_mode 2 "$RANKTUNE_BIN" topology --device=cpu --parallel.mode=sharded
expect bad_mode err "expected one of auto, single, ddp, balanced"

run unknown_subcommand 2 "$RANKTUNE_BIN" trian
expect unknown_subcommand err "unknown subcommand 'trian'"

# Bad input under mpirun: rank 0 alone speaks, every rank exits 2.
run mpi_bad_value 2 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" topology --device=cpu --train.lr=fast
lines mpi_bad_value err "error:" 1

finish
