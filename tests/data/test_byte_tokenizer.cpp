// The byte tokenizer and the generated tiny corpus of the default job.
#include <gtest/gtest.h>

#include <regex>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/packer.h"
#include "ranktune/data/tiny_corpus.h"
#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  const auto tok = tokenizer_load("byte");
  EXPECT_EQ(tok->vocab_size(), 259);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const auto ids = tok->encode(all);
  ASSERT_EQ(ids.size(), 257u);
  EXPECT_EQ(ids[0], ByteTokenizer::kBos);
  EXPECT_EQ(ids[0x80 + 1], 0x80);
  EXPECT_EQ(tok->decode(ids), all);
  EXPECT_EQ(tok->encode("a", false), (std::vector<std::int32_t>{'a'}));
}

// What `ranktune train`'s closing sample prints: a byte-level model's continuation may be any bytes; the log line
// shows invalid UTF-8 as \xNN and control characters escaped, and stays one line of valid UTF-8.
TEST(ByteTokenizer, DecodedBytesEscapeForALogLine) {
  ByteTokenizer tok;
  const std::string decoded = tok.decode({'a', 0xFF, '\n', '"', '\\', 0xC3, 0xA9, 0xC3, 0x01, '\t', 0x7F, 0xE2, 0x82});
  const std::string line = utf8_escape(decoded);
  EXPECT_EQ(line, "a\\xff\\n\\\"\\\\é\\xc3\\x01\\t\\x7f\\xe2\\x82");
  EXPECT_NO_THROW(utf8_validate(line, "escaped"));
  EXPECT_EQ(utf8_escape("plain é 中文 😀"), "plain é 中文 😀");
}

TEST(ByteTokenizer, SpecialTokens) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.pad_id(), 258);
  EXPECT_EQ(tok.token_id("<eos>"), 257);
  EXPECT_FALSE(tok.token_id("<s>").has_value());
  EXPECT_EQ(tok.decode({256, 'h', 'i', 257}, false), "<bos>hi<eos>");
  EXPECT_EQ(tok.decode({256, 'h', 'i', 257}, true), "hi");
  EXPECT_THROW(tok.decode({259}), DataError);
  EXPECT_EQ(tok.encode("<eos>", false).size(), 5u);  // never parsed from text
}

TEST(Unicode, ValidatesUtf8) {
  EXPECT_NO_THROW(utf8_validate("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "t"));
  for (const char* bad : {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xe2\x82"}) {
    EXPECT_THROW(utf8_validate(bad, "t"), DataError) << bad;
  }
  EXPECT_TRUE(unicode_is_letter(U'é'));
  EXPECT_TRUE(unicode_is_letter(U'語'));
  EXPECT_FALSE(unicode_is_letter(U'\u0301'));  // combining mark: category M
  EXPECT_TRUE(unicode_is_number(U'½'));
  EXPECT_TRUE(unicode_is_number(U'٣'));
  EXPECT_TRUE(unicode_is_space(U'\u3000'));
  EXPECT_FALSE(unicode_is_space(U'\u200b'));
}

TEST(TinyCorpus, DeterministicFromTheSeed) {
  EXPECT_EQ(tiny_corpus_generate(1, 50), tiny_corpus_generate(1, 50));
  EXPECT_NE(tiny_corpus_generate(1, 50), tiny_corpus_generate(2, 50));
  const auto docs = tiny_corpus_generate(1234, 3);
  ASSERT_EQ(docs.size(), 3u);
  // Pinned: the default job's data must not drift between builds or standard libraries.
  EXPECT_EQ(docs[0],
            "Counting: nine ten eleven twelve. Counting: eight nine ten eleven twelve thirteen. 9 times 7 is 63.");
}

TEST(TinyCorpus, FactsAreConsistentAndArithmeticIsRight) {
  const auto docs = tiny_corpus_generate(99, 2000);
  std::map<std::string, std::string> city;
  const std::regex lives(R"((\w+) lives in (\w+)\.)"), sum(R"((\d+) \+ (\d+) = (\d+)\.)"),
      prod(R"((\d+) times (\d+) is (\d+)\.)");
  int facts = 0, sums = 0;
  for (const auto& d : docs) {
    for (char c : d) ASSERT_TRUE(c >= 0x20 && c < 0x7f) << d;
    for (std::sregex_iterator it(d.begin(), d.end(), lives), end; it != end; ++it, ++facts) {
      auto [pos, fresh] = city.emplace((*it)[1], (*it)[2]);
      EXPECT_EQ(pos->second, (*it)[2]) << (*it)[1];
    }
    for (std::sregex_iterator it(d.begin(), d.end(), sum), end; it != end; ++it, ++sums) {
      EXPECT_EQ(std::stoi((*it)[1]) + std::stoi((*it)[2]), std::stoi((*it)[3]));
    }
    for (std::sregex_iterator it(d.begin(), d.end(), prod), end; it != end; ++it) {
      EXPECT_EQ(std::stoi((*it)[1]) * std::stoi((*it)[2]), std::stoi((*it)[3]));
    }
  }
  EXPECT_EQ(city.size(), 12u);
  EXPECT_GT(facts, 500);
  EXPECT_GT(sums, 200);
}

TEST(TinyCorpus, FillsTheTinyJobsRows) {
  // configs/tiny.ini: seq_len 128, micro_batch 8, 200 steps = 1600 rows; 2000 documents are enough.
  ByteTokenizer tok;
  long rows = 0;
  Packer packer({.seq_len = 128, .overflow = Overflow::split, .pad_id = ByteTokenizer::kPad, .fill_rows = true},
                [&](const PackedRow&) { ++rows; });
  for (const auto& d : tiny_corpus_generate(1234, 2000)) packer.add(document_from_text(tok, d));
  packer.finish();
  EXPECT_GE(rows, 1600);
  EXPECT_LT(packer.stats().pad_tokens, 128) << packer.stats().summary();
}

}  // namespace
}  // namespace ranktune
