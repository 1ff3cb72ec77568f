# The same binary under `srun --mpi=pmix` (through slurm/ddp.sbatch), `mpirun` inside a batch job, `mpirun` inside
# `salloc`, and plain `mpirun` with no Slurm at all, at 2 and 4 ranks: every launch prints the identical
# rank -> host / local rank / device table, and says which launcher it saw.
# RANKTUNE_TEST_DEVICE=cuda checks the GPU mapping on a machine with at least 4 GPUs (the fake gres indices 0-3 then
# name real devices).
source "$(dirname "$0")/lib.sh"
slurm_up

DEVICE=${RANKTUNE_TEST_DEVICE:-cpu}
export RANKTUNE_BIN RANKTUNE_COMMAND=topology RANKTUNE_ARGS="--device=$DEVICE" RANKTUNE_ENV=none
# shellcheck disable=SC2206
MPIRUN_FLAGS=($MPIEXEC_FLAGS)

# rank, host, local rank/size and device of each table row (the CUDA_VISIBLE_DEVICES column differs by launcher:
# Slurm lists the job's GPUs, plain mpirun leaves it unset).
mapping() { awk '/^rank +host/ { on = 1; next } on && NF == 0 { exit } on { print $1, $2, $3, $4 }' "$WORK/$1.out"; }

same_mapping() {
  local a=$1 b=$2 n=$3
  if [ "$(mapping "$a" | wc -l)" != "$n" ]; then fail "$a: $(mapping "$a" | wc -l) table rows, expected $n"; return; fi
  if diff <(mapping "$a") <(mapping "$b") >"$WORK/diff" 2>&1; then
    ok "$a and $b: identical rank mapping ($n ranks)"
  else
    fail "$a and $b map ranks differently:"; sed 's/^/    /' "$WORK/diff"
  fi
}

for n in 2 4; do
  job=$(job_submit "srun$n" --ntasks-per-node=$n --gpus-per-node=$n --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_done "$job" 120
  job_expect "$job" COMPLETED 0:0 0
  expect "srun$n" out "launch: srun (Slurm job $job step 0, SLURM_NTASKS=$n)"

  job=$(RANKTUNE_LAUNCHER=mpirun RANKTUNE_MPIRUN_FLAGS="$MPIEXEC_FLAGS" \
          job_submit "batchmpirun$n" --ntasks-per-node=$n --gpus-per-node=$n --cpus-per-task=2 slurm/ddp.sbatch)
  job_wait_done "$job" 120
  job_expect "$job" COMPLETED 0:0 0
  expect "batchmpirun$n" out "launch: mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=$n) inside Slurm job $job"

  # Interactive: an allocation, then mpirun in it (Open MPI reads the allocation from Slurm's variables).
  run "salloc$n" 0 salloc --ntasks=$n --gpus-per-node=$n --cpus-per-task=1 \
    "$MPIEXEC" "${MPIRUN_FLAGS[@]}" -n $n "$RANKTUNE_BIN" topology --device="$DEVICE"
  expect "salloc$n" out "launch: mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=$n) inside Slurm job"
  expect "salloc$n" out "across $n rank(s): correct"

  # A workstation: no Slurm variables at all.
  run "plain$n" 0 env -u SLURM_CONF "$MPIEXEC" "${MPIRUN_FLAGS[@]}" -n $n "$RANKTUNE_BIN" topology --device="$DEVICE"
  expect "plain$n" out "launch: mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=$n)"
  lines "plain$n" out "inside Slurm job" 0

  same_mapping "srun$n" "batchmpirun$n" $n
  same_mapping "srun$n" "salloc$n" $n
  same_mapping "srun$n" "plain$n" $n
done

expect_no_job_procs 10
finish
