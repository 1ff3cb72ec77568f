# Balanced mode under mpirun -np 2 is refused on every rank with exit code 2, one message, no hang.
source "$(dirname "$0")/lib.sh"

for device in cpu cuda; do
  # Each rank reports its own exit code, so "every rank exits 2" is checked directly.
  run "np2_$device" 0 "${MPIRUN[@]}" 2 bash -c "\"$RANKTUNE_BIN\" topology --device=$device --parallel.mode=balanced; echo \"rank \$OMPI_COMM_WORLD_RANK exit \$?\""
  lines "np2_$device" out "exit 2" 2
  lines "np2_$device" err "error:" 1
done
expect np2_cuda err "parallel.mode=balanced runs ONE process"
expect np2_cpu err "parallel.mode=balanced runs ONE process"
expect np2_cpu err "2 processes were started by mpirun"
expect np2_cpu err "--parallel.mode=ddp"
expect np2_cpu err "mpirun -np 1"

run np4_exit 2 "${MPIRUN[@]}" 4 "$RANKTUNE_BIN" topology --device=cpu --parallel.mode=balanced
run np2_single 2 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" topology --device=cpu --parallel.mode=single
expect np2_single err "parallel.mode=single runs ONE process"

finish
