// Tokenizers as GGUF vocabularies, on the HF-made tokenizer fixtures of tests/reference/fixtures/tokenizers: the
// llama.cpp family and pre-tokenizer of each, tokens/types/merges/scores as the tokenizer.json holds them, the byte
// tokenizer as GPT-2's byte symbols, and the refusals of what llama.cpp would split differently.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "ranktune/data/data_error.h"
#include "ranktune/data/gguf_vocab.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

std::string fixture(const std::string& name) {
  return std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/tokenizers/" + name + ".tokenizer.json";
}

nlohmann::json read(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string refusal(const std::string& name) {
  try {
    gguf_vocab_build(fixture(name), 1000);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(GgufVocab, ByteTokenizerIsGpt2ByteSymbolsWithoutMerges) {
  const GgufVocab v = gguf_vocab_build("byte", 300);
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_TRUE(v.merges.empty());
  ASSERT_EQ(v.tokens.size(), 300u);
  // The 256 symbols are exactly the one-character tokens of a byte-level BPE trained by HF tokenizers.
  std::set<std::string> alphabet;
  const nlohmann::json gpt2 = read(fixture("gpt2"));
  for (const auto& [tok, id] : gpt2.at("model").at("vocab").items()) {
    const auto cp = static_cast<unsigned char>(tok[0]);
    if (tok.size() == (cp < 0x80 ? 1u : 2u)) alphabet.insert(tok);
  }
  EXPECT_EQ(std::set<std::string>(v.tokens.begin(), v.tokens.begin() + 256), alphabet);
  EXPECT_EQ(v.tokens[' '], "\xc4\xa0");   // Ġ
  EXPECT_EQ(v.tokens['\n'], "\xc4\x8a");  // Ċ
  EXPECT_EQ(v.tokens['A'], "A");
  EXPECT_EQ(v.tokens[256], "<bos>");
  EXPECT_EQ(v.types[256], gguf_token_control);
  EXPECT_EQ(v.tokens[299], "[PAD299]");
  EXPECT_EQ(v.types[299], gguf_token_unused);
  EXPECT_EQ(v.bos, 256);
  EXPECT_EQ(v.eos, 257);
  EXPECT_EQ(v.pad, 258);
  EXPECT_TRUE(v.add_bos);
  EXPECT_FALSE(v.add_eos);
}

TEST(GgufVocab, ByteLevelFamilies) {
  test::ScratchDir dir("gguf_vocab");
  for (const auto& [name, pre] : {std::pair<std::string, std::string>{"gpt2", "gpt-2"},
                                  {"llama3", "llama-bpe"},
                                  {"qwen2", "qwen2"},
                                  {"qwen2_nfc", "qwen2"}}) {
    SCOPED_TRACE(name);
    // The Qwen2 fixtures' extra <tool> strips spaces around it (refused below): here without the stripping.
    nlohmann::json j = read(fixture(name));
    for (auto& a : j.at("added_tokens")) a["lstrip"] = a["rstrip"] = false;
    const std::string file = dir / (name + ".tokenizer.json");
    std::ofstream(file) << j.dump();
    const GgufVocab v = gguf_vocab_build(file, 1000);
    EXPECT_EQ(v.model, "gpt2");
    EXPECT_EQ(v.pre, pre);
    EXPECT_TRUE(v.scores.empty());
    const auto& merges = j.at("model").at("merges");
    ASSERT_EQ(v.merges.size(), merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& m = merges[r];
      const std::string want = m.is_string() ? m.get<std::string>()
                                             : m[0].get<std::string>() + " " + m[1].get<std::string>();
      ASSERT_EQ(v.merges[r], want);
    }
    std::set<int> added;
    for (const auto& a : j.at("added_tokens")) added.insert(a.at("id").get<int>());
    for (const auto& [tok, id] : j.at("model").at("vocab").items()) {
      ASSERT_EQ(v.tokens.at(id.get<int>()), tok);
      if (!added.count(id.get<int>())) ASSERT_EQ(v.types.at(id.get<int>()), gguf_token_normal);
    }
    for (const auto& a : j.at("added_tokens")) {
      const int id = a.at("id").get<int>();
      EXPECT_EQ(v.tokens.at(id), a.at("content").get<std::string>());
      EXPECT_EQ(v.types.at(id), a.at("special").get<bool>() ? gguf_token_control : gguf_token_user_defined);
    }
    EXPECT_EQ(v.tokens.back(), "[PAD999]");
    EXPECT_FALSE(v.add_space_prefix.has_value());
  }
}

TEST(GgufVocab, SentencePieceStyleFamilies) {
  for (const std::string name : {"llama2", "mistral"}) {
    SCOPED_TRACE(name);
    const nlohmann::json j = read(fixture(name));
    const GgufVocab v = gguf_vocab_build(fixture(name), 1000);
    EXPECT_EQ(v.model, "llama");
    EXPECT_EQ(v.pre, "default");
    EXPECT_TRUE(v.merges.empty());
    EXPECT_EQ(v.add_space_prefix, true);
    EXPECT_EQ(v.types[0], gguf_token_unknown);  // <unk>
    EXPECT_EQ(v.unk, 0);
    EXPECT_EQ(v.types[1], gguf_token_control);  // <s>
    EXPECT_EQ(v.bos, 1);
    EXPECT_EQ(v.eos, 2);
    EXPECT_TRUE(v.add_bos);
    const auto& vocab = j.at("model").at("vocab");
    EXPECT_EQ(v.types[vocab.at("<0x0A>").get<int>()], gguf_token_byte);
    // A token scores by the first merge that makes it: earlier merges score higher; no merge makes a character.
    const auto& merges = j.at("model").at("merges");
    const auto joined = [&](std::size_t r) {
      const auto& m = merges[r];
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        return s.erase(s.find(' '), 1);
      }
      return m[0].get<std::string>() + m[1].get<std::string>();
    };
    EXPECT_EQ(v.scores[vocab.at(joined(0)).get<int>()], -1.0f);
    EXPECT_GT(v.scores[vocab.at(joined(0)).get<int>()], v.scores[vocab.at(joined(1)).get<int>()]);
    EXPECT_LT(v.scores[vocab.at("a").get<int>()], -static_cast<float>(merges.size()));
  }
  // A user-defined token is matched against raw text, so Llama 2's normalized "madeup" keeps its plain spelling.
  const GgufVocab v = gguf_vocab_build(fixture("llama2"), 1000);
  EXPECT_EQ(v.tokens[956], "madeup");
  EXPECT_EQ(v.types[956], gguf_token_user_defined);
}

TEST(GgufVocab, RefusesWhatLlamaCppSplitsDifferently) {
  EXPECT_NE(refusal("gpt2_prefix_space").find("add_prefix_space=true"), std::string::npos);
  EXPECT_NE(refusal("metaspace_split").find("split=true"), std::string::npos);
  EXPECT_NE(refusal("added_strip").find("lstrip/rstrip"), std::string::npos);
  EXPECT_NE(refusal("qwen2").find("'<tool>' with lstrip/rstrip"), std::string::npos);
  try {
    gguf_vocab_build(fixture("gpt2"), 512);
    FAIL() << "a model vocabulary smaller than the tokenizer's was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("512"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ranktune
