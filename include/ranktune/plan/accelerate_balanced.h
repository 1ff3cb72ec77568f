// defines: accelerate_balanced_map, a re-statement of what Hugging Face accelerate's device_map="balanced" does
// (get_balanced_memory + infer_auto_device_map, weights only, decoder layers never split, the first GPU keeping room
// for the largest remaining layer, the last GPU keeping its full budget, tied weights together), so `ranktune plan`
// can print what users would have got next to our plan (docs/modes.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ranktune/plan/balanced_plan.h"
#include "ranktune/plan/layer_cost.h"

namespace ranktune {

struct AccelerateAssignment {
  std::vector<int> device_of_unit;         // per unit (embed, layers..., head); -1 = did not fit (offloaded)
  std::vector<std::int64_t> weight_bytes;  // per device (index in the budgets list), weights only
};

// weight_bytes_per_param: 2 for bf16. low_zero: balanced_low_0 (GPU 0 gets as little as possible).
AccelerateAssignment accelerate_balanced_map(const LlamaConfig& model, int weight_bytes_per_param,
                                             const std::vector<DeviceBudget>& devices, bool low_zero = false);

std::string accelerate_table(const LlamaConfig& model, const AccelerateAssignment& a,
                             const std::vector<DeviceBudget>& devices);

}  // namespace ranktune
