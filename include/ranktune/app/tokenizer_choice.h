// defines: tokenizer_choose and tokenizer_open, how `train`, `prepare` and `generate` pick their tokenizer:
// data.tokenizer, whose default `auto` is the model directory's own tokenizer.json (model.path, or the directory
// `generate` reads) and the byte tokenizer only without one. A tokenizer that does not fit the model directory's
// config.json (more tokens than vocab_size, other bos/eos ids) is refused naming both files, before any text is read.
#pragma once

#include <memory>
#include <string>

#include "ranktune/data/tokenizer.h"

namespace ranktune {

struct TokenizerChoice {
  std::string spec;            // what tokenizer_load takes: "byte" or a tokenizer.json path
  std::string origin;          // why this one, for the log line
  std::string model_dir;       // the model directory it must fit; "" = none (a random-init model)
  bool model_own = false;      // it is the tokenizer.json that model_dir holds
  bool explicit_byte = false;  // data.tokenizer=byte over a pretrained model: warned about, its ids not compared
};

// `setting` is data.tokenizer; `model_dir` is model.path or the directory `generate` reads ("" for none). `auto` over
// a directory without tokenizer.json is a ConfigError whose hint gives the fixes. A directory written by an export of
// a byte-tokenizer run (data/byte_tokenizer_files.h) gives the byte tokenizer itself.
TokenizerChoice tokenizer_choose(const std::string& setting, const std::string& model_dir);

// Loads the choice and checks it against model_dir/config.json (and generation_config.json for eos); logs
// "tokenizer: ..." on rank 0, and a warning there for the byte tokenizer over a pretrained model.
std::unique_ptr<Tokenizer> tokenizer_open(const TokenizerChoice& choice);

}  // namespace ranktune
