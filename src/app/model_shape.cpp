// The shape the planner, the mode rules and `ranktune plan` see: the LlamaConfig the model will be built from (the
// [model] keys, or the config.json of --model.path), so their parameter counts are the model's.
#include "ranktune/app/commands.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

LlamaConfig configured_model_shape(const Config& cfg) {
  return cfg.model.path.empty() ? llama_config_from_model(cfg.model)
                                : llama_config_load(cfg.model.path + "/config.json");
}

}  // namespace ranktune
