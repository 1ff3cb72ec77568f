// tokenizer_load: the one place that maps `data.tokenizer` to an implementation.
#include "ranktune/data/tokenizer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ranktune/core/hash.h"
#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/hf_tokenizer.h"

namespace ranktune {

std::unique_ptr<Tokenizer> tokenizer_load(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  std::unique_ptr<Tokenizer> tok = hf_tokenizer_load(spec);
  tok->set_chat_template(chat_template_read(spec));
  return tok;
}

std::string tokenizer_fingerprint(const std::string& spec) {
  if (spec == "byte") return "byte";
  std::filesystem::path file(spec);
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  Fnv1a h;
  for (const auto& part :
       {file, file.parent_path() / "tokenizer_config.json", file.parent_path() / "chat_template.jinja"}) {
    std::ifstream in(part, std::ios::binary);
    if (!in) {
      if (part == file) throw DataError("cannot read tokenizer file '" + file.string() + "'");
      continue;
    }
    for (auto it = std::istreambuf_iterator<char>(in); it != std::istreambuf_iterator<char>(); ++it)
      h.update_byte(static_cast<std::uint8_t>(*it));
    h.update_byte(0xff);  // keeps "ab" + "" apart from "a" + "b"
  }
  char hex[32];
  std::snprintf(hex, sizeof hex, "fnv1a64:%016llx", static_cast<unsigned long long>(h.value()));
  return hex;
}

}  // namespace ranktune
