// The byte tokenizer: ids are the bytes themselves.
#include "ranktune/data/byte_tokenizer.h"

#include "ranktune/data/data_error.h"

namespace ranktune {
namespace {
constexpr std::string_view kNames[] = {"<bos>", "<eos>", "<pad>"};
}

ByteTokenizer::ByteTokenizer() {
  bos_ = kBos;
  eos_ = kEos;
  pad_ = kPad;
}

std::vector<std::int32_t> ByteTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() + 1);
  if (add_special) ids.push_back(kBos);
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special) const {
  std::string out;
  out.reserve(ids.size());
  for (std::int32_t id : ids) {
    if (id >= 0 && id < 256) {
      out += static_cast<char>(id);
    } else if (id >= kBos && id < kVocabSize) {
      if (!skip_special) out += kNames[id - kBos];
    } else {
      throw DataError("byte tokenizer: id " + std::to_string(id) + " is outside the vocabulary [0, 259)");
    }
  }
  return out;
}

std::optional<std::int32_t> ByteTokenizer::token_id(std::string_view token) const {
  for (std::int32_t i = 0; i < 3; ++i) {
    if (token == kNames[i]) return kBos + i;
  }
  return std::nullopt;
}

}  // namespace ranktune
