// Chat formats. Built-in families: ids equal HF `tokenizers` on the rendered conversation (fixtures from
// tests/reference/make_tokenizer_fixtures.py), and exactly the assistant replies and their end tokens are trained.
// Model templates: ids equal transformers' apply_chat_template and the mask its assistant-token rule, for the templates
// of tests/reference/make_chat_template_fixtures.py; the template is found beside tokenizer.json as transformers
// finds it; `auto` never guesses a family.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/hf_tokenizer.h"
#include "ranktune/data/sources.h"
#include "support/scratch_dir.h"

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
  EXPECT_EQ(chat_format_parse("auto", byte).family(), ChatFamily::plain);
  EXPECT_FALSE(chat_format_parse("auto", byte).is_template());
  EXPECT_EQ(chat_format_parse("chatml", byte).family(), ChatFamily::chatml);
  EXPECT_EQ(chat_format_parse("chatml", byte).name(), "chatml");
  EXPECT_THROW(chat_format_parse("vicuna", byte), DataError);
}

// ---- the model's own template ----

const std::string kRef = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/";
using ojson = nlohmann::ordered_json;

ojson family_fixture(const std::string& name) {
  std::ifstream in(kRef + "chat_templates/" + name + ".json");
  EXPECT_TRUE(in) << name;
  return ojson::parse(in);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A tokenizer_config.json as a model ships it: the special tokens and the chat template.
std::string tokenizer_config(const ojson& f) {
  ojson c = f["special_tokens"];
  c["chat_template"] = f["template"];
  return c.dump();
}

std::unique_ptr<Tokenizer> tokenizer_with_template(const ojson& f) {
  const std::string config = tokenizer_config(f);
  auto tok = hf_tokenizer_parse(slurp(kRef + f["tokenizer"].get<std::string>()), f["tokenizer"], config);
  tok->set_chat_template(chat_template_parse(config, "model/tokenizer_config.json", "", ""));
  return tok;
}

std::vector<ChatMessage> messages_of(const ojson& j) {
  std::vector<ChatMessage> msgs;
  for (const ojson& m : j) msgs.push_back({m["role"], m["content"]});
  return msgs;
}

class ModelTemplate : public testing::TestWithParam<std::string> {};

TEST_P(ModelTemplate, IdsAndMaskEqualTransformers) {
  const ojson f = family_fixture(GetParam());
  const auto tok = tokenizer_with_template(f);
  const ChatFormat format = chat_format_parse("auto", *tok);
  ASSERT_TRUE(format.is_template());
  EXPECT_EQ(format.describe(), "model template (model/tokenizer_config.json)");
  EXPECT_EQ(format.name(), "template");
  int encoded = 0;
  for (const ojson& e : f["encodings"]) {
    const std::vector<ChatMessage> msgs = messages_of(e["messages"]);
    if (e.contains("refused")) {
      try {
        chat_encode(*tok, format, msgs);
        ADD_FAILURE() << "encoded a conversation whose turns the prefix method cannot find: " << e["messages"].dump();
      } catch (const DataError& err) {
        EXPECT_THAT(err.what(), testing::HasSubstr("cannot find the trained span of assistant message"));
        EXPECT_THAT(err.what(), testing::HasSubstr("--data.chat_template="));
      }
      continue;
    }
    const TokenizedDoc doc = chat_encode(*tok, format, msgs);
    EXPECT_EQ(doc.ids, e["ids"].get<std::vector<std::int32_t>>()) << "rendered: " << e["rendered"].dump();
    EXPECT_EQ(doc.train, e["mask"].get<std::vector<std::uint8_t>>()) << "rendered: " << e["rendered"].dump();
    ++encoded;
  }
  EXPECT_GE(encoded, 5);
}

INSTANTIATE_TEST_SUITE_P(Families, ModelTemplate,
                         testing::Values("llama3", "llama3_1", "llama2", "mistral", "mistral_v3", "qwen2", "qwen2_5",
                                         "chatml", "zephyr", "gemma", "gemma3"));

TEST(ModelTemplate, TheTemplatesOwnRefusalComesThrough) {
  const auto tok = tokenizer_with_template(family_fixture("gemma"));
  const ChatFormat format = chat_format_parse("template", *tok);
  EXPECT_THAT(
      [&] {
        chat_encode(*tok, format, {{"system", "s"}, {"user", "u"}, {"assistant", "a"}});
      },
      testing::ThrowsMessage<DataError>(testing::HasSubstr("System role not supported")));
  // A family named explicitly is used even when the model has a template.
  EXPECT_FALSE(chat_format_parse("llama2", *tok).is_template());
}

TEST(ModelTemplate, AutoNeverGuessesAFamily) {
  const auto llama3 = hf_tokenizer_load(kDir + "llama3.tokenizer.json");
  ASSERT_TRUE(llama3->chat_template().text.empty());
  EXPECT_THAT([&] { chat_format_parse("auto", *llama3); },
              testing::ThrowsMessage<DataError>(testing::HasSubstr("comes without a chat template")));
  try {
    chat_format_parse("auto", *llama3);
  } catch (const DataError& e) {
    EXPECT_THAT(e.hint(), testing::HasSubstr("--data.chat_template=llama3"));
  }
  ByteTokenizer byte;
  EXPECT_THROW(chat_format_parse("template", byte), DataError);
}

TEST(ModelTemplate, FoundBesideTokenizerJsonAsTransformersFindsIt) {
  test::ScratchDir dir("chat_template_dir");
  std::filesystem::copy_file(kDir + "llama3.tokenizer.json", dir / "tokenizer.json");
  const ojson f = family_fixture("llama3");
  std::ofstream(dir / "tokenizer_config.json") << tokenizer_config(f);
  const std::string before = tokenizer_fingerprint(dir.str());
  auto tok = tokenizer_load(dir.str());
  EXPECT_EQ(tok->chat_template().text, f["template"].get<std::string>());
  EXPECT_EQ(tok->chat_template().origin, dir / "tokenizer_config.json");
  EXPECT_EQ(chat_format_parse("auto", *tok).describe(), "model template (" + (dir / "tokenizer_config.json") + ")");
  const auto& specials = tok->chat_template().special_tokens;
  ASSERT_EQ(specials.size(), 2u);
  EXPECT_EQ(specials[0], (std::pair<std::string, std::string>{"bos_token", "<|begin_of_text|>"}));

  // chat_template.jinja (what save_pretrained writes) wins over the config's entry, and is part of the fingerprint.
  std::ofstream(dir / "chat_template.jinja") << "{% for m in messages %}{{ m.content }}{% endfor %}";
  tok = tokenizer_load(dir / "tokenizer.json");
  EXPECT_EQ(tok->chat_template().text, "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(tok->chat_template().origin, dir / "chat_template.jinja");
  EXPECT_NE(tokenizer_fingerprint(dir.str()), before);

  // The list form: the template named "default".
  const TokenizerChatTemplate named = chat_template_parse(
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
          "eos_token": {"content": "</s>", "special": true}})",
      "c.json", "", "");
  EXPECT_EQ(named.text, "D");
  EXPECT_EQ(named.special_tokens.at(0), (std::pair<std::string, std::string>{"eos_token", "</s>"}));
  EXPECT_THROW(chat_template_parse(R"({"chat_template": [{"name": "tool_use", "template": "T"}]})", "c.json", "", ""),
               DataError);
  EXPECT_THROW(chat_template_parse(R"({"chat_template": 3})", "c.json", "", ""), DataError);
}

TEST(ModelTemplate, SourcesChooseTheFormatAtTheFirstMessagesRecordAndSayWhich) {
  test::ScratchDir dir("chat_template_sources");
  std::filesystem::copy_file(kDir + "llama3.tokenizer.json", dir / "tokenizer.json");
  std::ofstream(dir / "text.jsonl") << R"({"text": "plain text needs no chat format"})"
                                    << "\n";
  std::ofstream(dir / "chat.jsonl")
      << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
      << "\n";
  SourcesOptions o;
  o.seq_len = 64;
  const Packer::Sink ignore = [](const PackedRow&) {};
  // No template and no messages record: nothing to choose, nothing refused.
  EXPECT_EQ(sources_pack({dir / "text.jsonl"}, *tokenizer_load(dir.str()), o, ignore).chat_template, "none");
  EXPECT_THROW(sources_pack({dir / "chat.jsonl"}, *tokenizer_load(dir.str()), o, ignore), DataError);

  std::ofstream(dir / "tokenizer_config.json") << tokenizer_config(family_fixture("llama3"));
  testing::internal::CaptureStdout();
  const SourcesStats st = sources_pack({dir / "text.jsonl", dir / "chat.jsonl"}, *tokenizer_load(dir.str()), o, ignore);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(st.chat_template, "template");
  EXPECT_EQ(st.records, 2);
  EXPECT_THAT(out, testing::HasSubstr("chat format: model template (" + (dir / "tokenizer_config.json") + ")"));
}

TEST(ModelTemplate, OutsideTheSubsetIsRefusedByName) {
  TokenizerChatTemplate t;
  t.text = "{% macro turn(m) %}{{ m.content }}{% endmacro %}{% for m in messages %}{{ turn(m) }}{% endfor %}";
  t.origin = "model/chat_template.jinja";
  ByteTokenizer byte;
  byte.set_chat_template(t);
  EXPECT_THAT([&] { chat_format_parse("auto", byte); },
              testing::ThrowsMessage<DataError>(
                  testing::AllOf(testing::HasSubstr("model/chat_template.jinja line 1, column 1"),
                                 testing::HasSubstr("{% macro %}"))));
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
