// defines: the regex pre-splits of the byte-level BPE families, written by hand to give exactly what HF `tokenizers`
// (Oniguruma) gives for these three patterns: GPT-2's, Llama 3's (= cl100k: digits in runs of 1-3) and Qwen2's
// (single digits). A general regex engine is not needed for the supported families; other patterns are refused.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace ranktune {

enum class PreSplit { gpt2, llama3, qwen2 };

const char* pre_split_name(PreSplit kind);

// The family whose pattern is exactly `regex` (as written in tokenizer.json), or nullopt.
std::optional<PreSplit> pre_split_from_pattern(std::string_view regex);

// Splits valid UTF-8 text into consecutive pieces (the regex matches, in order; together they cover the text).
std::vector<std::string_view> pre_split(PreSplit kind, std::string_view text);

}  // namespace ranktune
