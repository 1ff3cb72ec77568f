// defines: the byte tokenizer written as Hugging Face tokenizer files, so that the export of a run trained with it
// loads in transformers (AutoTokenizer, generate) with the same ids: tokenizer.json is a BPE without merges whose
// byte fallback maps byte b to id b, plus the special tokens 256-258; and byte_tokenizer_file_is, which recognises
// that file so ranktune reads such a directory back as the byte tokenizer itself (raw-byte decode, no special parsing).
#pragma once

#include <string>

namespace ranktune {

std::string byte_tokenizer_json();
std::string byte_tokenizer_config_json();  // tokenizer_config.json: bos/eos/pad by name
std::string byte_special_tokens_map_json();

// True when `path` (a tokenizer.json) holds exactly byte_tokenizer_json(); false for any other or unreadable file.
bool byte_tokenizer_file_is(const std::string& path);

}  // namespace ranktune
