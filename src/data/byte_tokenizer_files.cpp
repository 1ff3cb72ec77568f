// The byte tokenizer as HF tokenizer files (see the header). Every byte b is written as the token "<0xBB>" with id b
// and no merges: HF's BPE then finds no token for a character and falls back to the ids of its UTF-8 bytes, which
// are the bytes themselves. The post-processor puts bos first, as ByteTokenizer::encode(text, true) does.
#include "ranktune/data/byte_tokenizer_files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ranktune/data/byte_tokenizer.h"

namespace ranktune {
namespace {

using json = nlohmann::ordered_json;

constexpr const char* kSpecial[] = {"<bos>", "<eos>", "<pad>"};  // ids 256, 257, 258 (ByteTokenizer::token_id)

json special_ref(const char* name) { return json{{"SpecialToken", {{"id", name}, {"type_id", 0}}}}; }

}  // namespace

std::string byte_tokenizer_json() {
  json vocab = json::object();
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = b;
  }
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    vocab[kSpecial[i]] = ByteTokenizer::kBos + i;
    added.push_back({{"id", ByteTokenizer::kBos + i},
                     {"content", kSpecial[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const json a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", json::array({special_ref("<bos>"), a})},
                         {"pair", json::array({special_ref("<bos>"), a, b})},
                         {"special_tokens",
                          {{"<bos>", {{"id", "<bos>"}, {"ids", {ByteTokenizer::kBos}}, {"tokens", {"<bos>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", json::array()}};
  return j.dump(2) + "\n";
}

std::string byte_tokenizer_config_json() {
  json j;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";
  j["bos_token"] = kSpecial[0];
  j["eos_token"] = kSpecial[1];
  j["pad_token"] = kSpecial[2];
  j["clean_up_tokenization_spaces"] = false;
  return j.dump(2) + "\n";
}

std::string byte_special_tokens_map_json() {
  json j;
  j["bos_token"] = kSpecial[0];
  j["eos_token"] = kSpecial[1];
  j["pad_token"] = kSpecial[2];
  return j.dump(2) + "\n";
}

bool byte_tokenizer_file_is(const std::string& path) {
  static const std::string want = byte_tokenizer_json();
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) != want.size() || ec) return false;  // a real vocabulary is not read
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str() == want;
}

}  // namespace ranktune
