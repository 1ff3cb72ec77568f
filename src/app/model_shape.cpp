// The shape the planner, the mode rules and `ranktune plan` see: the LlamaConfig the model will be built from (the
// [model] keys, or the config.json of --model.path checked against its safetensors headers), so their parameter counts
// are the model's, and a corrupted config.json is refused before any estimate or allocation is made from it.
// config_apply_model_dir: what a --model.path directory implies for the config (its bitsandbytes 4-bit weights).
#include "ranktune/app/commands.h"

#include <filesystem>

#include "ranktune/core/error.h"
#include "ranktune/model/bnb_checkpoint.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

LlamaConfig configured_model_shape(const Config& cfg) {
  return cfg.model.path.empty() ? llama_config_from_model(cfg.model) : hf_model_config(cfg.model.path);
}

void config_apply_model_dir(Config& cfg, const ConfigValues& given, const std::string& subcommand) {
  if (subcommand != "train" && subcommand != "plan") return;
  if (cfg.model.path.empty() || !std::filesystem::exists(std::filesystem::path(cfg.model.path) / "config.json")) return;
  if (!hf_model_dir_is_bnb_nf4(cfg.model.path)) return;  // refuses another quantization_config by name
  const auto it = given.find("model.quantize");
  if (it != given.end() && it->second.source != ConfigSource::default_value && cfg.model.quantize != "nf4") {
    throw ConfigError("model.quantize=" + cfg.model.quantize + " (" + it->second.origin + ") but model.path " +
                          cfg.model.path + " holds bitsandbytes 4-bit NF4 weights (config.json's quantization_config)",
                      "drop model.quantize (nf4 follows from the directory), or use the model's 16-bit weights");
  }
  cfg.model.quantize = "nf4";
}

}  // namespace ranktune
