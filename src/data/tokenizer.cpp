// tokenizer_load: the one place that maps `data.tokenizer` to an implementation.
#include "ranktune/data/tokenizer.h"

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/hf_tokenizer.h"

namespace ranktune {

std::unique_ptr<Tokenizer> tokenizer_load(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  return hf_tokenizer_load(spec);
}

}  // namespace ranktune
