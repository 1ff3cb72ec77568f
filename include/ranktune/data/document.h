// defines: TokenizedDoc (one training document as token ids plus, per token, whether the model learns to predict
// it) and the encoders that build one from plain text, from a prompt/response pair, or from template segments.
// Chat templates and record readers produce these; the packer turns them into fixed-length rows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/data/tokenizer.h"

namespace ranktune {

struct TokenizedDoc {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> train;  // train[i] = 1: ids[i] is a prediction target (loss), 0: context only
};

// A piece of rendered template: text to tokenize, or one token id (a special token placed by id, never parsed).
struct Segment {
  std::string text;
  std::int32_t token = -1;
  bool train = false;
};

// Encodes segments as one text: consecutive text segments are tokenized together (as HF tokenizes the rendered
// template string), so a train/no-train boundary inside text lands on the token where encoding the text before
// the boundary stops agreeing with encoding the whole (the longest common prefix); a token straddling the
// boundary counts as trained.
TokenizedDoc encode_segments(const Tokenizer& tok, const std::vector<Segment>& segments);

// bos (as the tokenizer's post-processor adds it) + text + eos; every token trained.
TokenizedDoc document_from_text(const Tokenizer& tok, std::string_view text);

// bos + prompt (not trained) + response + eos (trained). The texts are joined as given: put any separator
// (space, newline) in the prompt.
TokenizedDoc document_from_prompt_response(const Tokenizer& tok, std::string_view prompt, std::string_view response);

}  // namespace ranktune
