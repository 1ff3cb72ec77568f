// The shape the planner, the mode rules and `ranktune plan` see: the LlamaConfig the model will be built from (the
// [model] keys, or the config.json of --model.path checked against its safetensors headers), so their parameter counts
// are the model's, and a corrupted config.json is refused before any estimate or allocation is made from it.
#include "ranktune/app/commands.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

LlamaConfig configured_model_shape(const Config& cfg) {
  return cfg.model.path.empty() ? llama_config_from_model(cfg.model) : hf_model_config(cfg.model.path);
}

}  // namespace ranktune
