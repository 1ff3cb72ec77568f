// Chat templates: ids equal HF `tokenizers` on the rendered conversation (fixtures from
// tests/reference/make_tokenizer_fixtures.py), and exactly the assistant replies and their end tokens are trained.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/hf_tokenizer.h"

namespace ranktune {
namespace {

using json = nlohmann::json;
const std::string kDir = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/tokenizers/";

// Decoded runs of consecutive trained tokens.
std::vector<std::string> trained_runs(const Tokenizer& tok, const TokenizedDoc& doc) {
  std::vector<std::string> runs;
  std::vector<std::int32_t> cur;
  for (std::size_t i = 0; i <= doc.ids.size(); ++i) {
    if (i < doc.ids.size() && doc.train[i]) {
      cur.push_back(doc.ids[i]);
    } else if (!cur.empty()) {
      runs.push_back(tok.decode(cur, false));
      cur.clear();
    }
  }
  return runs;
}

struct FamilyCase {
  std::string fixture;
  ChatFamily family;
};

class ChatTemplateFixture : public testing::TestWithParam<FamilyCase> {};

TEST_P(ChatTemplateFixture, IdsEqualHfAndOnlyRepliesAreTrained) {
  const FamilyCase& fc = GetParam();
  const auto tok = hf_tokenizer_load(kDir + fc.fixture + ".tokenizer.json");
  // The mistral fixture has no [INST] token, so detection cannot tell it from llama2.
  EXPECT_EQ(chat_family_detect(*tok), fc.family == ChatFamily::mistral ? ChatFamily::llama2 : fc.family);
  std::ifstream in(kDir + fc.fixture + ".chat.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    const json c = json::parse(line);
    std::vector<ChatMessage> msgs;
    for (const json& m : c["messages"]) msgs.push_back({m["role"], m["content"]});
    const TokenizedDoc doc = chat_encode(*tok, fc.family, msgs);
    ASSERT_EQ(doc.ids.size(), doc.train.size());
    EXPECT_EQ(doc.ids, c["ids"].get<std::vector<std::int32_t>>()) << "rendered: " << c["rendered"].dump();
    EXPECT_EQ(trained_runs(*tok, doc), c["replies"].get<std::vector<std::string>>())
        << "rendered: " << c["rendered"].dump();
  }
  EXPECT_GE(n, 10);
}

INSTANTIATE_TEST_SUITE_P(Families, ChatTemplateFixture,
                         testing::Values(FamilyCase{"llama3", ChatFamily::llama3},
                                         FamilyCase{"qwen2", ChatFamily::chatml},
                                         FamilyCase{"llama2", ChatFamily::llama2},
                                         FamilyCase{"mistral", ChatFamily::mistral}),
                         [](const auto& info) { return info.param.fixture; });

TEST(ChatTemplate, PlainTemplateWithTheByteTokenizer) {
  ByteTokenizer tok;
  const TokenizedDoc doc =
      chat_encode(tok, ChatFamily::plain, {{"system", "Be brief."}, {"user", "2+2?"}, {"assistant", "4"}});
  const std::string prompt = "System: Be brief.\nUser: 2+2?\nAssistant: ";
  ASSERT_EQ(doc.ids.size(), 1 + prompt.size() + 1 + 1);
  EXPECT_EQ(doc.ids.front(), ByteTokenizer::kBos);
  EXPECT_EQ(tok.decode(doc.ids), prompt + "4");
  for (std::size_t i = 0; i < doc.ids.size(); ++i) {
    EXPECT_EQ(doc.train[i], i >= 1 + prompt.size() ? 1 : 0) << i;
  }
  EXPECT_EQ(doc.ids.back(), ByteTokenizer::kEos);
}

TEST(ChatTemplate, RefusesBadConversations) {
  ByteTokenizer byte;
  const auto llama2 = hf_tokenizer_load(kDir + "llama2.tokenizer.json");
  EXPECT_THROW(chat_encode(byte, ChatFamily::plain, {}), DataError);
  EXPECT_THROW(chat_encode(byte, ChatFamily::plain, {{"robot", "x"}}), DataError);
  EXPECT_THROW(chat_encode(*llama2, ChatFamily::llama2, {{"assistant", "x"}}), DataError);
  EXPECT_THROW(chat_encode(*llama2, ChatFamily::llama2, {{"user", "a"}, {"user", "b"}}), DataError);
  try {
    chat_encode(byte, ChatFamily::llama3, {{"user", "a"}});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("<|begin_of_text|>"));
  }
  EXPECT_EQ(chat_family_parse("auto", byte), ChatFamily::plain);
  EXPECT_EQ(chat_family_parse("chatml", byte), ChatFamily::chatml);
  EXPECT_THROW(chat_family_parse("vicuna", byte), DataError);
}

TEST(Document, PromptResponseMasksThePrompt) {
  ByteTokenizer tok;
  const TokenizedDoc doc = document_from_prompt_response(tok, "Q: hi\nA: ", "hello");
  EXPECT_EQ(tok.decode(doc.ids), "Q: hi\nA: hello");
  const std::vector<std::uint8_t> want = [] {
    std::vector<std::uint8_t> w(1 + 9, 0);
    w.insert(w.end(), 5 + 1, 1);
    return w;
  }();
  EXPECT_EQ(doc.train, want);
}

TEST(Document, PromptBoundaryInsideATokenTrainsTheStraddlingToken) {
  // In the llama2 fixture " world" is one token "▁world"; a prompt ending in the middle of it must not shift the
  // response: the straddling token is trained and the prompt tokens before it are not.
  const auto tok = hf_tokenizer_load(kDir + "llama2.tokenizer.json");
  const TokenizedDoc whole = document_from_text(*tok, "hello world");
  const TokenizedDoc split = document_from_prompt_response(*tok, "hello wo", "rld");
  EXPECT_EQ(split.ids, whole.ids);
  ASSERT_GE(split.ids.size(), 3u);
  EXPECT_EQ(split.train.front(), 0);
  EXPECT_EQ(split.train.back(), 1);
}

TEST(Document, TextGetsBosAndEosAllTrained) {
  ByteTokenizer tok;
  const TokenizedDoc doc = document_from_text(tok, "ab");
  EXPECT_EQ(doc.ids, (std::vector<std::int32_t>{ByteTokenizer::kBos, 'a', 'b', ByteTokenizer::kEos}));
  EXPECT_EQ(doc.train, (std::vector<std::uint8_t>{1, 1, 1, 1}));
}

}  // namespace
}  // namespace ranktune
