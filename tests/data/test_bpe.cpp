// BpeModel's per-thread word cache: cached ids equal the uncached merge for every word (first sight, repeats, past
// the cache's bound, from several threads at once, and with two models used in turn on one thread); characters read
// from the one- and two-byte table behave as the vocabulary lookup they replace, malformed bytes included.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ranktune/data/bpe.h"

namespace ranktune {
namespace {

// A vocabulary of single characters (ASCII and two-byte ones) and merges among them, the ranks picked at random.
BpeModel make_model(unsigned seed, BpeOptions options = {}) {
  // é, ж, €: two- and three-byte characters beside ASCII.
  const std::vector<std::string> chars = {"a", "b", "c", "d", " ", "\xC3\xA9", "\xD0\xB6", "\xE2\x82\xAC"};
  TokenMap vocab;
  for (const std::string& c : chars) vocab.emplace(c, static_cast<std::int32_t>(vocab.size()));
  std::mt19937 rng(seed);
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> tokens = chars;
  for (int i = 0; i < 60; ++i) {
    const std::string& a = tokens[rng() % tokens.size()];
    const std::string& b = tokens[rng() % tokens.size()];
    if (vocab.count(a + b)) continue;
    merges.emplace_back(a, b);
    vocab.emplace(a + b, static_cast<std::int32_t>(vocab.size()));
    tokens.push_back(a + b);
  }
  if (options.unk_token) vocab.emplace(*options.unk_token, static_cast<std::int32_t>(vocab.size()));
  return BpeModel(std::move(vocab), merges, options, "test");
}

std::vector<std::string> random_words(unsigned seed, int n) {
  const std::vector<std::string> chars = {"a", "b", "c", "d", " ", "\xC3\xA9", "\xD0\xB6", "\xE2\x82\xAC"};
  std::mt19937 rng(seed);
  std::vector<std::string> words;
  for (int i = 0; i < n; ++i) {
    std::string w;
    for (unsigned k = 1 + rng() % 12; k > 0; --k) w += chars[rng() % chars.size()];
    words.push_back(w);
  }
  return words;
}

std::vector<std::int32_t> ids(const BpeModel& m, const std::string& w, bool cached) {
  std::vector<std::int32_t> out = {-7};  // ids are appended after what is there
  if (cached) {
    m.tokenize(w, out);
  } else {
    m.tokenize_uncached(w, out);
  }
  return out;
}

TEST(BpeCache, CachedIdsEqualTheMergeOnFirstSightAndOnRepeats) {
  const BpeModel m = make_model(1);
  const std::vector<std::string> words = random_words(2, 3000);
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::string& w : words) ASSERT_EQ(ids(m, w, true), ids(m, w, false)) << "'" << w << "' pass " << pass;
  }
}

TEST(BpeCache, StaysExactPastItsBound) {
  const BpeModel m = make_model(3);
  const std::vector<std::string> words = random_words(4, 150000);  // more distinct words than the cache keeps
  for (const std::string& w : words) ASSERT_EQ(ids(m, w, true), ids(m, w, false)) << w;
  for (std::size_t i = 0; i < 1000; ++i) ASSERT_EQ(ids(m, words[i], true), ids(m, words[i], false)) << words[i];
}

TEST(BpeCache, TwoModelsInTurnOnOneThreadKeepTheirOwnIds) {
  const BpeModel a = make_model(5), b = make_model(6);
  const std::vector<std::string> words = random_words(7, 500);
  int differ = 0;
  for (const std::string& w : words) {
    ASSERT_EQ(ids(a, w, true), ids(a, w, false)) << w;
    ASSERT_EQ(ids(b, w, true), ids(b, w, false)) << w;
    differ += ids(a, w, true) != ids(b, w, true);
  }
  EXPECT_GT(differ, 100);  // the two merge lists really disagree, so a shared cache would show
}

TEST(BpeCache, ThreadsAtOnceGetTheIdsOfOneThread) {
  const BpeModel m = make_model(8);
  const std::vector<std::string> words = random_words(9, 20000);
  std::vector<std::vector<std::int32_t>> want;
  for (const std::string& w : words) want.push_back(ids(m, w, false));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < words.size(); ++i) {
        const std::size_t k = (i * (t + 1)) % words.size();  // each thread in its own order
        bad[t] += ids(m, words[k], true) != want[k];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

// An overlong encoding (C1 81 for 'A'), a stray continuation byte and a truncated sequence are not the characters
// they resemble: the table must answer as the vocabulary does (unknown here, so the unk token).
TEST(BpeCache, MalformedBytesAreNotTakenForCharacters) {
  BpeOptions o;
  o.unk_token = "<unk>";
  TokenMap vocab{{"A", 0}, {"\xC3\xA9", 1}, {"<unk>", 2}};
  const BpeModel m(std::move(vocab), {}, o, "test");
  for (bool cached : {false, true}) {
    EXPECT_EQ(ids(m, "A\xC3\xA9", cached), (std::vector<std::int32_t>{-7, 0, 1}));
    EXPECT_EQ(ids(m, "\xC1\x81", cached), (std::vector<std::int32_t>{-7, 2}));
    EXPECT_EQ(ids(m, "\xA9", cached), (std::vector<std::int32_t>{-7, 2}));
    EXPECT_EQ(ids(m, "\xC3", cached), (std::vector<std::int32_t>{-7, 2}));
    const std::string c3_41 = std::string("\xC3") + "A";  // one malformed two-byte unit
    EXPECT_EQ(ids(m, c3_41, cached), (std::vector<std::int32_t>{-7, 2}));
  }
}

}  // namespace
}  // namespace ranktune
