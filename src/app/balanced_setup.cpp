#include "ranktune/app/balanced_setup.h"

#include <map>

#include "ranktune/app/commands.h"
#include "ranktune/core/error.h"

namespace ranktune {
namespace {

constexpr std::int64_t kCpuBudget = std::int64_t{1} << 50;  // host memory is not planned: one budget that always fits

std::vector<DeviceBudget> physical_budgets(const Config& cfg, const std::vector<GpuInfo>& gpus, bool on_gpu) {
  if (!on_gpu) return {{-1, kCpuBudget}};
  if (!cfg.parallel.max_memory.empty()) return parse_memory_budgets(cfg.parallel.max_memory);
  if (gpus.empty())
    throw NoGpuError("no GPU visible to place the model on",
                     "give budgets for the GPUs you plan to use: --parallel.max_memory=0:80GiB,1:80GiB");
  const auto reserve = static_cast<std::int64_t>(cfg.parallel.reserve_gib * 1024 * 1024 * 1024);
  std::vector<DeviceBudget> out;
  for (const auto& g : gpus) out.push_back({g.index, (g.free_bytes >= 0 ? g.free_bytes : g.total_bytes) - reserve});
  return out;
}

}  // namespace

BalancedSetup balanced_setup(const Config& cfg, const std::vector<GpuInfo>& gpus, bool on_gpu) {
  BalancedSetup out;
  out.devices = physical_budgets(cfg, gpus, on_gpu);
  const int d = static_cast<int>(out.devices.size());
  const int n = cfg.parallel.stages > 0 ? cfg.parallel.stages : d;
  // Stage i on device i (fewer stages than devices), or contiguous groups of stages per device (more).
  std::vector<int> device_pos(n);
  std::map<int, int> sharing;
  for (int i = 0; i < n; ++i) {
    device_pos[i] = n <= d ? i : static_cast<int>(static_cast<long>(i) * d / n);
    ++sharing[device_pos[i]];
  }
  std::vector<DeviceBudget> per_stage;
  for (int i = 0; i < n; ++i) {
    const DeviceBudget& dev = out.devices[device_pos[i]];
    out.stage_device.push_back(dev.device);
    per_stage.push_back({i, dev.bytes / sharing[device_pos[i]]});
  }
  out.plan = plan_balanced_for(configured_model_shape(cfg), train_setup_from(cfg, on_gpu), per_stage,
                               cfg.parallel.micro_batches);
  return out;
}

std::vector<std::string> balanced_stage_labels(const BalancedSetup& setup) {
  std::vector<std::string> out;
  for (int dev : setup.stage_device) out.push_back(dev < 0 ? "cpu" : "cuda:" + std::to_string(dev));
  return out;
}

}  // namespace ranktune
