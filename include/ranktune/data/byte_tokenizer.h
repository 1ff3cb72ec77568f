// defines: ByteTokenizer, the tokenizer of the tiny default job: one id per byte (0-255) plus bos 256, eos 257 and
// pad 258, so vocab 259 (= the tiny config's model.vocab_size). Needs no file and round-trips any byte string.
#pragma once

#include "ranktune/data/tokenizer.h"

namespace ranktune {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kBos = 256;
  static constexpr std::int32_t kEos = 257;
  static constexpr std::int32_t kPad = 258;
  static constexpr std::int32_t kVocabSize = 259;

  ByteTokenizer();
  // add_special puts bos first; special tokens are never parsed from text (every byte is its own id).
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const override;
  // Special ids are dropped when skip_special, else written as "<bos>", "<eos>", "<pad>". Raw bytes are returned
  // as they are (the byte tokenizer accepts any bytes, so it does not substitute U+FFFD).
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const override;
  std::int32_t vocab_size() const override { return kVocabSize; }
  std::optional<std::int32_t> token_id(std::string_view token) const override;
  std::string describe() const override { return "byte (259)"; }
};

}  // namespace ranktune
