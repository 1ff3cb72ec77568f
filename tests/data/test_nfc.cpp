// NFC against Python's unicodedata (tests/reference/make_nfc_fixtures.py): crafted cases one rule each, every
// canonically decomposable character and every combining mark, seeded random mark sequences, and HF's answer for
// characters assigned after Unicode 9.0. Also: the quick check's fast path returns the text itself, unchanged.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ranktune/data/data_error.h"
#include "ranktune/data/nfc.h"

namespace ranktune {
namespace {

using json = nlohmann::json;

std::vector<json> nfc_cases() {
  const std::string path = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/nfc.jsonl";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

std::string code_points(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const std::size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : 4;
    char32_t cp = len == 1 ? b : b & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    char buf[16];
    std::snprintf(buf, sizeof buf, "U+%04X ", static_cast<unsigned>(cp));
    out += buf;
    i += len;
  }
  return out;
}

TEST(Nfc, EqualsUnicodedataOnEveryFixtureCase) {
  const auto cases = nfc_cases();
  ASSERT_GT(cases.size(), 300u);
  int mismatches = 0;
  for (const json& c : cases) {
    const std::string text = c["text"], expected = c["nfc"];
    const std::string got = nfc_normalize(text);
    if (got != expected && ++mismatches <= 5) {
      ADD_FAILURE() << c["name"].get<std::string>() << " (" << c["source"].get<std::string>() << ")"
                    << (text.size() < 200 ? "\n  text: " + code_points(text) : "")
                    << (got.size() < 200 ? "\n  ours: " + code_points(got) : "")
                    << (expected.size() < 200 ? "\n  want: " + code_points(expected) : "");
    }
    EXPECT_EQ(nfc_normalize(got), got) << "NFC is idempotent: " << c["name"];
    if (nfc_quick_check(text)) {
      EXPECT_EQ(text, expected) << "quick check said NFC: " << c["name"];
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " cases";
}

TEST(Nfc, QuickCheckPassesTextThroughWithoutCopying) {
  // Long enough to live on the heap: ASCII; composed Latin; Hangul syllables, Devanagari with a virama (class 9), CJK.
  const std::vector<std::string> texts = {
      std::string(100, 'a'), "na\xc3\xafve caf\xc3\xa9 and more text to leave SSO",
      "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 "
      "\xe4\xbd\xa0\xe5\xa5\xbd"};
  for (const std::string& text : texts) {
    EXPECT_TRUE(nfc_quick_check(text)) << code_points(text);
    std::string moved = text;
    const char* data = moved.data();
    const std::string out = nfc_normalize(std::move(moved));
    EXPECT_EQ(out, text);
    EXPECT_EQ(out.data(), data) << "the quick path must hand back the same buffer";
  }
}

TEST(Nfc, QuickCheckSendsWhatMayChangeToTheFullPath) {
  EXPECT_FALSE(nfc_quick_check("e\xcc\x81"));                 // U+0301 may compose with what precedes it
  EXPECT_FALSE(nfc_quick_check("\xe2\x84\xab"));              // U+212B ANGSTROM SIGN: a singleton
  EXPECT_FALSE(nfc_quick_check("\xe0\xa5\x98"));              // U+0958: a composition exclusion
  EXPECT_FALSE(nfc_quick_check("\xe1\x84\x80\xe1\x85\xa1"));  // Hangul V jamo may compose with an L
  EXPECT_FALSE(nfc_quick_check("q\xcc\x85\xcc\x96"));         // U+0305 U+0316: classes 230 then 220, out of order
  EXPECT_TRUE(nfc_quick_check("q\xcc\x96\xcc\x85"));          // 220 then 230, and neither composes: already NFC
  EXPECT_TRUE(nfc_quick_check(""));
}

TEST(Nfc, CombiningClasses) {
  EXPECT_EQ(unicode_combining_class(U'a'), 0);
  EXPECT_EQ(unicode_combining_class(0x301), 230);
  EXPECT_EQ(unicode_combining_class(0x316), 220);
  EXPECT_EQ(unicode_combining_class(0x334), 1);
  EXPECT_EQ(unicode_combining_class(0x94D), 9);
  EXPECT_EQ(unicode_combining_class(0x1D165), 216);
  EXPECT_EQ(unicode_combining_class(0xD3B), 0) << "assigned in Unicode 10: unknown to HF's tables";
}

TEST(Nfc, InvalidUtf8IsAnError) {
  EXPECT_THROW(nfc_normalize(std::string("e\xcc")), DataError);
  EXPECT_THROW(nfc_quick_check(std::string("ok \xff")), DataError);
}

}  // namespace
}  // namespace ranktune
