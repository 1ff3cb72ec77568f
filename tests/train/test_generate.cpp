// prompt_encode: one bos before a prompt, whether the tokenizer adds it or the text (a rendered chat template)
// already starts with it, checked against HF `tokenizers`' ids in the llama3 fixture.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "ranktune/data/hf_tokenizer.h"
#include "ranktune/data/tokenizer.h"
#include "ranktune/train/generate.h"

namespace ranktune {
namespace {

const std::string kTokenizers = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/tokenizers/";

TEST(PromptEncode, OneBosWhetherTheTextCarriesItOrNot) {
  const auto tok = hf_tokenizer_load(kTokenizers + "llama3.tokenizer.json");
  const std::int32_t bos = *tok->bos_id();
  const std::string turn = "<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>";
  const auto plain = prompt_encode(*tok, turn);
  const auto templated = prompt_encode(*tok, "<|begin_of_text|>" + turn);
  ASSERT_GE(plain.size(), 2u);
  EXPECT_EQ(plain[0], bos);
  EXPECT_NE(plain[1], bos);
  EXPECT_EQ(templated, plain);  // not bos, bos, ...
  EXPECT_EQ(templated, tok->encode("<|begin_of_text|>" + turn, /*add_special=*/false));
}

// HF's own ids for a fixture line that starts with bos: what add_special_tokens=False gives, the ids a chat template
// user passes to generate (the fixture's "ids" field holds HF's doubled bos, which prompt_encode avoids).
TEST(PromptEncode, EqualsHfWithoutSpecialTokensForABosLine) {
  const auto tok = hf_tokenizer_load(kTokenizers + "llama3.tokenizer.json");
  std::ifstream in(kTokenizers + "llama3.cases.jsonl");
  int checked = 0;
  for (std::string line; std::getline(in, line);) {
    const auto c = nlohmann::json::parse(line);
    const std::string text = c["text"];
    if (text.rfind("<|begin_of_text|>", 0) != 0) continue;
    const auto hf_ids = c["ids"].get<std::vector<std::int32_t>>();
    ASSERT_GE(hf_ids.size(), 2u);
    EXPECT_EQ(hf_ids[0], hf_ids[1]) << "HF itself doubles bos here: " << text;
    EXPECT_EQ(prompt_encode(*tok, text), c["ids_plain"].get<std::vector<std::int32_t>>()) << text;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST(PromptEncode, ByteTokenizerAlwaysAddsItsBos) {
  const auto tok = tokenizer_load("byte");
  EXPECT_EQ(prompt_encode(*tok, "<bos>hi"), tok->encode("<bos>hi", true));  // bos is never parsed from text
  EXPECT_EQ(prompt_encode(*tok, "hi").front(), *tok->bos_id());
}

}  // namespace
}  // namespace ranktune
