// defines: ParallelMode, ModeRequest, ModeDecision and mode_decide, the rules that choose between single-device,
// DDP (one rank per GPU) and balanced sharding (one process over all local GPUs). Pure: no MPI or CUDA, so
// every rule is unit-tested with injected facts (tests/distributed/test_parallel_mode.cpp). docs/modes.md quotes
// the messages.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ranktune/distributed/topology.h"

namespace ranktune {

enum class ParallelMode { single, ddp, balanced };
const char* parallel_mode_name(ParallelMode m);

struct ModeRequest {
  std::string mode = "auto";                    // auto | single | ddp | balanced
  std::string device = "cuda";                  // cuda | cpu | auto (device_resolve)
  std::optional<std::int64_t> footprint_bytes;  // estimated training memory of the model, when known
  double reserve_gib = 2.0;
};

struct ModeDecision {
  ParallelMode mode = ParallelMode::single;
  bool on_gpu = false;
  std::vector<int> device_of_rank;    // CUDA device index per world rank; -1 on CPU
  std::vector<int> balanced_devices;  // balanced: the devices of the single process, in stage order
  std::string reason;                 // one sentence: why this mode
  std::vector<std::string> notes;     // things worth knowing (idle GPUs, stale variables, ...)
};

// device=auto for this launch: cuda when any rank sees a GPU (a rank that sees none is then device=cuda's error),
// else cpu, which a newcomer's first run on a laptop expects; cuda and cpu are returned as given.
std::string device_resolve(const std::string& device, const ClusterFacts& facts);

// Throws LaunchModeError (exit 2) when the request contradicts the launch, NoGpuError (exit 4) when no GPU is
// visible for --device=cuda, TopologyError (exit 3) when ranks would share a GPU. device=auto without any GPU runs on
// the CPU with a note naming why no GPU was seen.
ModeDecision mode_decide(const ClusterFacts& facts, const ModeRequest& req);

// The table `ranktune topology` prints: one row per rank, then the mode and its reason.
std::string topology_table(const ClusterFacts& facts, const ModeDecision& d);

}  // namespace ranktune
