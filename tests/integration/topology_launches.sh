# `ranktune topology` under a plain command and mpirun at 1, 2 and 4 ranks; the no-GPU message names the variable.
source "$(dirname "$0")/lib.sh"

run plain 0 "$RANKTUNE_BIN" topology --device=cpu
expect plain out "launch: a single command (no launcher)"
expect plain out "mode:   single on CPU"
expect plain out "check:  mpi all-reduce of 1 MiB across 1 rank(s): correct"

for n in 1 2 4; do
  run "np$n" 0 "${MPIRUN[@]}" "$n" "$RANKTUNE_BIN" topology --device=cpu
  expect "np$n" out "mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=$n)"
  expect "np$n" out "across $n rank(s): correct"
  lines "np$n" out "launch:" 1   # printed by rank 0 only
done
expect np4 out "mode:   ddp on CPU"
expect np4 out "3    "

# A stale launcher variable in a single process is reported, not believed.
run stale 0 env OMPI_COMM_WORLD_SIZE=4 "$RANKTUNE_BIN" topology --device=cpu --parallel.mode=balanced
expect stale out "OMPI_COMM_WORLD_SIZE=4 but MPI reports 1"

# No GPU for --device=cuda: exit 4, the variable that hid the GPUs is named (this holds with or without a GPU).
run hidden 4 env CUDA_VISIBLE_DEVICES= "$RANKTUNE_BIN" topology --device=cuda
expect hidden err "no GPU visible on host"
expect hidden err "CUDA_VISIBLE_DEVICES=''"
expect hidden err "hint:"
run slurm_no_gpu 4 env -u SLURM_JOB_GPUS -u SLURM_STEP_GPUS CUDA_VISIBLE_DEVICES=-1 SLURM_JOB_ID=4242 "$RANKTUNE_BIN" topology --device=cuda
expect slurm_no_gpu err "Slurm job 4242 was allocated no GPU"
expect slurm_no_gpu err "--gpus-per-task=1"

finish
