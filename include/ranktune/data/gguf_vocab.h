// defines: GgufVocab, a tokenizer as llama.cpp's GGUF vocabulary (the tokenizer.ggml.* keys), and gguf_vocab_build.
// Byte-level BPE (GPT-2, Llama 3, Qwen2) becomes llama.cpp's "gpt2" model with the pre-tokenizer named after its split
// pattern; SentencePiece-style BPE (byte fallback, spaces as U+2581: Llama 2, Mistral, TinyLlama) its "llama" model,
// scored by merge rank so that its highest-score-first merging follows the ranks; the byte tokenizer a "gpt2" model of
// the 256 byte symbols without merges. A tokenizer llama.cpp would split differently is refused by name (DataError).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ranktune {

// llama.cpp's token types (tokenizer.ggml.token_type).
enum GgufTokenType : std::int32_t {
  gguf_token_normal = 1,
  gguf_token_unknown = 2,
  gguf_token_control = 3,
  gguf_token_user_defined = 4,
  gguf_token_unused = 5,
  gguf_token_byte = 6,
};

struct GgufVocab {
  std::string model;                // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;                  // tokenizer.ggml.pre: "gpt-2", "llama-bpe", "qwen2"; "default" for "llama"
  std::vector<std::string> tokens;  // one per id of the model's vocabulary; ids no token has are "[PAD<id>]"
  std::vector<float> scores;        // "llama" only: -(1 + rank of the first merge making the token), lower for
                                    // the tokens no merge makes
  std::vector<std::int32_t> types;  // GgufTokenType per id
  std::vector<std::string> merges;  // "gpt2" only: "left right" in rank order
  std::optional<std::int32_t> bos, eos, pad, unk;
  bool add_bos = false;                  // encode(text) with specials puts bos first
  bool add_eos = false;                  // ... and eos last
  std::optional<bool> add_space_prefix;  // "llama" only: U+2581 put before the text
  std::string chat_template;             // the Jinja text, "" when the tokenizer has none
  std::string describe;                  // for the export summary: "gpt2/gpt-2, 300 tokens, 43 merges"
};

// `spec` as tokenizer_load takes it: "byte", or a tokenizer.json (or a directory holding one) with the chat template
// and special tokens found beside it. `vocab_size` is the model's embedding rows: a tokenizer with more ids is a
// DataError, fewer are padded with unused tokens. Throws DataError naming what llama.cpp cannot reproduce.
GgufVocab gguf_vocab_build(const std::string& spec, std::int64_t vocab_size);

}  // namespace ranktune
