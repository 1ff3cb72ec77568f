// defines: the loader of Hugging Face `tokenizer.json` BPE tokenizers: byte-level BPE (GPT-2, Llama 3, Qwen2) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama), with added/special tokens, the
// template post-processor and the decoders those families use. Anything else in the file is refused by name
// (docs/data.md lists what is supported), so a tokenizer never silently differs from HF `tokenizers`.
#pragma once

#include <memory>
#include <string>

#include "ranktune/data/tokenizer.h"

namespace ranktune {

// Reads `path` (a tokenizer.json, or a directory holding one). bos/eos/pad come from a tokenizer_config.json beside
// it when present, else from the post-processor template and the usual token names.
std::unique_ptr<Tokenizer> hf_tokenizer_load(const std::string& path);

// The same from the file's text; `origin` names it in errors; `config_json` is a tokenizer_config.json text or "".
std::unique_ptr<Tokenizer> hf_tokenizer_parse(const std::string& json_text, const std::string& origin,
                                              const std::string& config_json = {});

}  // namespace ranktune
