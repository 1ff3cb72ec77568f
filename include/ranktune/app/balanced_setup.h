// defines: BalancedSetup and balanced_setup, how `ranktune train` and `ranktune plan` turn the config and this node's
// GPUs into the balanced plan: device budgets (--parallel.max_memory, else free memory minus parallel.reserve_gib),
// the number of stages (--parallel.stages, else one per device; more stages than devices share devices in
// contiguous groups, which is how CPU "stages" and several stages on one GPU are tested), and the exact partition.
#pragma once

#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/distributed/topology.h"
#include "ranktune/plan/balanced_plan.h"

namespace ranktune {

struct BalancedSetup {
  std::vector<DeviceBudget> devices;  // the physical budgets (one per GPU, or one for the CPU)
  std::vector<int> stage_device;      // plan stage i runs on device stage_device[i] (-1 = CPU)
  BalancedPlan plan;                  // over one budget per stage
};

// `gpus`: this node's GPUs (empty on CPU runs). Throws ConfigError / NoGpuError / OutOfMemoryError with the fix.
BalancedSetup balanced_setup(const Config& cfg, const std::vector<GpuInfo>& gpus, bool on_gpu);

// "cuda:0", "cuda:0", "cuda:1" or "cpu": the device of each plan stage, for plan_table.
std::vector<std::string> balanced_stage_labels(const BalancedSetup& setup);

}  // namespace ranktune
