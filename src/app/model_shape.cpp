// The shape the planner and the mode rules see: one LlamaConfig (from the [model] keys, or the config.json of
// --model.path) mapped once onto the planner's ModelShape.
#include "ranktune/app/commands.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

ModelShape configured_model_shape(const Config& cfg) {
  const LlamaConfig c = cfg.model.path.empty() ? llama_config_from_model(cfg.model)
                                               : llama_config_load(cfg.model.path + "/config.json");
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
