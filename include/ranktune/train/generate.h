// defines: generate, text continuation from a model: greedy (temperature 0) or sampled with temperature and top-p,
// from a seed. Plain recomputation of the whole prefix each token (no KV cache): meant for looking at what a training
// run learned, not for serving.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ranktune/model/llama.h"

namespace ranktune {

struct GenerateOptions {
  int max_new_tokens = 64;
  double temperature = 0;  // 0 = greedy
  double top_p = 1.0;
  std::uint64_t seed = 0;
  std::int32_t stop_token = -1;  // eos; -1 = none
  std::int64_t vocab_limit = 0;  // only ids below this are generated (the tokenizer's size when the model's
                                 // vocabulary is larger); 0 = the whole vocabulary
};

std::vector<std::int32_t> generate(LlamaImpl& model, const std::vector<std::int32_t>& prompt, const GenerateOptions& o);

}  // namespace ranktune
