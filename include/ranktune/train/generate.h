// defines: generate, text continuation from a model: greedy (temperature 0) or sampled with temperature and top-p,
// from a seed. Plain recomputation of the whole prefix each token (no KV cache): meant for looking at what a training
// run learned, not for serving; prompt_encode, one bos whether or not the prompt text carries it; sample_text, the
// closing sample of `ranktune train`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/model/llama.h"

namespace ranktune {

class RowStore;
class Tokenizer;

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

// The ids of a prompt: with the tokenizer's special tokens (its bos), unless the text already starts with bos, as a
// prompt rendered by a chat template does; a second bos is a sequence the model never saw in training.
std::vector<std::int32_t> prompt_encode(const Tokenizer& tokenizer, std::string_view text);

// The sample a training run ends with: what it learned, in words.
constexpr int kSamplePromptTokens = 24;   // a prompt long enough to set the context
constexpr int kSampleFallbackTokens = 8;  // the prompt when no document offers kSamplePromptTokens real tokens
constexpr int kSampleNewTokens = 80;

// The first kSamplePromptTokens tokens of the first document that starts inside a row and has that many tokens, each
// but the last followed by a real target (no padding, no masked prompt); else the first kSampleFallbackTokens tokens
// of row 0.
std::vector<std::int32_t> sample_prompt(const RowStore& rows);

// `prompt="..." | continuation="..."`: sample_prompt(rows) and its greedy continuation (kSampleNewTokens at most, up
// to the tokenizer's eos), decoded, each on one line with backslash escapes (utf8_escape: invalid UTF-8 as \xNN).
std::string sample_text(LlamaImpl& model, const RowStore& rows, const Tokenizer& tokenizer);

}  // namespace ranktune
