// The shape the planner and the mode rules see: the [model] keys, or the config.json of --model.path.
#include "ranktune/app/commands.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

ModelShape configured_model_shape(const Config& cfg) {
  if (cfg.model.path.empty()) return model_shape_from(cfg.model);
  const LlamaConfig c = llama_config_load(cfg.model.path + "/config.json");
  ModelShape s;
  s.hidden = c.hidden_size;
  s.layers = c.num_layers;
  s.heads = c.num_heads;
  s.kv_heads = c.num_kv_heads;
  s.ffn = c.intermediate_size;
  s.vocab = c.vocab_size;
  s.tied = c.tie_word_embeddings;
  s.qkv_bias = c.qkv_bias;
  return s;
}

}  // namespace ranktune
