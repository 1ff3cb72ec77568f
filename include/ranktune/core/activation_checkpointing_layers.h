// defines: activation_checkpointed_layer and activation_checkpointed_count, which decoder layers recompute their
// forward in backward when train.activation_checkpointing_layers asks for `count` of a model's `layers`: spread
// evenly (layer i recomputes when floor((i + 1) count / layers) > floor(i count / layers): with half of them, the odd
// layers), so each pipeline stage of balanced mode gets its share; count <= 0 or >= layers: every layer. The layers
// left out keep their activations: no recomputation, more memory. The model and the planner follow the same rule.
#pragma once

#include <cstdint>

namespace ranktune {

inline std::int64_t activation_checkpointed_count(std::int64_t layers, std::int64_t count) {
  return count <= 0 || count >= layers ? layers : count;
}

inline bool activation_checkpointed_layer(std::int64_t layer, std::int64_t layers, std::int64_t count) {
  if (count <= 0 || count >= layers) return true;
  return (layer + 1) * count / layers > layer * count / layers;
}

}  // namespace ranktune
