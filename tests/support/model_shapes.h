// defines: the published model shapes the plan and FLOPs tests use, as the LlamaConfig their config.json gives
// (head_dim explicit, as it is for Mistral-Nemo, or hidden_size / num_heads as transformers derives it when absent).
#pragma once

#include <cstdint>

#include "ranktune/model/llama_config.h"

namespace ranktune::test {

inline LlamaConfig llama_shape(std::int64_t hidden, std::int64_t layers, std::int64_t heads, std::int64_t kv_heads,
                               std::int64_t intermediate, std::int64_t vocab, std::int64_t head_dim = 0) {
  LlamaConfig c;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim > 0 ? head_dim : hidden / heads;
  c.intermediate_size = intermediate;
  c.vocab_size = vocab;
  c.max_position_embeddings = 2048;
  c.source = "test shape";
  return c;
}

inline LlamaConfig tinyllama() { return llama_shape(2048, 22, 32, 4, 5632, 32000); }
inline LlamaConfig llama3_8b() { return llama_shape(4096, 32, 32, 8, 14336, 128256); }
// hidden 5120 but 32 heads of 128: attention is 4096 wide, k/v 1024.
inline LlamaConfig mistral_nemo() { return llama_shape(5120, 40, 32, 8, 14336, 131072, 128); }

}  // namespace ranktune::test
