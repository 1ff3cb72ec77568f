// defines: tiny_llama(), the one tiny Llama shape the C++ tests build their models from: CPU forward and backward
// in milliseconds, yet grouped-query attention (4 query heads over 2 KV heads) and more than one layer, so that the
// general code paths run. A test that needs another shape changes fields of it, so that the difference shows.
#pragma once

#include "ranktune/model/llama_config.h"

namespace ranktune::test {

inline LlamaConfig tiny_llama() {
  LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.source = "small test config";  // error messages name it
  return c;
}

}  // namespace ranktune::test
