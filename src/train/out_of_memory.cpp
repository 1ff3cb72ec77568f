#include "ranktune/train/out_of_memory.h"

#include <cstdint>
#include <vector>

#include "ranktune/core/text.h"
#include "ranktune/plan/balanced_plan.h"
#include "ranktune/plan/layer_cost.h"

namespace ranktune {

OutOfMemoryError out_of_memory_error(const std::string& allocator_message, int rank, long step, const Config& cfg,
                                     const LlamaConfig& model, bool on_gpu) {
  const TrainSetup setup = train_setup_from(cfg, on_gpu);
  const std::int64_t planned = training_footprint_bytes(model, setup);
  const std::string what = "rank " + std::to_string(rank) + " ran out of device memory in step " +
                           std::to_string(step) + " (" + leading_sentences(allocator_message, 2) +
                           "); the plan for this run is " + format_bytes(planned) + " on one device";
  std::vector<std::string> ways;
  for (const PlanVariant& v : plan_variants(model, setup)) {
    const std::int64_t bytes = training_footprint_bytes(model, v.setup);
    if (bytes < planned) ways.push_back(v.option + " (" + format_bytes(bytes) + ")");
  }
  return OutOfMemoryError(what, plan_ways_hint(ways,
                                               "more GPUs (--parallel.mode=balanced); `ranktune plan` with the "
                                               "same options shows the plan, and --parallel.reserve_gib leaves "
                                               "room for what it does not count"));
}

}  // namespace ranktune
