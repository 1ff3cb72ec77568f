// defines: GpuInfo, RankFacts, ClusterFacts (what each rank sees: host, local rank, GPUs, launcher variables),
// launch_env_capture, launch_describe, topology_table, and the encoding used to all-gather the facts.
// Pure: no MPI or CUDA here. topology_detect (mpi side, in topology_detect.h) fills these structs.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ranktune {

struct GpuInfo {
  int index = 0;  // CUDA device index as this rank sees it (after CUDA_VISIBLE_DEVICES)
  std::string name;
  std::string uuid;        // "GPU-xxxxxxxx-...", as nvidia-smi prints it
  std::string pci_bus_id;  // "0000:18:00.0"
  std::int64_t total_bytes = 0;
  std::int64_t free_bytes = -1;  // -1 = unknown (NVML not available)
};

// Launcher variables, read before MPI_Init: reported in diagnostics, never trusted over MPI.
using LaunchEnv = std::map<std::string, std::string>;
LaunchEnv launch_env_capture();

struct RankFacts {
  int world_rank = 0;
  int local_rank = 0;
  int local_size = 1;
  std::string host;
  int cuda_status = 0;  // cudaGetDeviceCount's result code; 0 = success
  std::string cuda_status_text;
  std::vector<GpuInfo> gpus;
  std::vector<std::vector<bool>> peer_access;  // peer_access[i][j]: device i can read device j's memory
  LaunchEnv env;
};

struct ClusterFacts {
  int world_size = 1;
  std::vector<RankFacts> ranks;  // indexed by world rank
};

// Who started the processes, from the launcher variables: "mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=2)",
// "srun (Slurm job 12 step 0, SLURM_NTASKS=4)", "a single command (no launcher)".
std::string launch_describe(const LaunchEnv& env, int mpi_world_size);

// Whether mpirun, Slurm or another PMI launcher started this process: its output then goes to job logs, even when
// the launcher gives it a pseudo-terminal.
bool launch_is_managed(const LaunchEnv& env);

// Launcher variables that claim a different world size than MPI reports (stale variables in a container, a nested
// launch). Empty when consistent.
std::optional<std::string> launch_stale_size(const LaunchEnv& env, int mpi_world_size);

std::string env_or(const LaunchEnv& env, const std::string& key, const std::string& fallback);

// Text encoding of RankFacts for topology_gather's all-gather; decode(encode(x)) == x.
std::string rank_facts_encode(const RankFacts& f);
RankFacts rank_facts_decode(const std::string& s);

}  // namespace ranktune
