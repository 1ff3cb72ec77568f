// Fnv1a: the published FNV-1a 64 vectors (from the standard offset basis), ranktune's own start value, and the loops
// the call sites used before core/hash.h, so that every stored or compared hash keeps its bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/core/hash.h"

namespace ranktune {
namespace {

std::uint64_t standard(std::string_view s) { return Fnv1a(Fnv1a::kStandardBasis).update(s).value(); }

// The loop every site had inline: start 1469598103934665603, xor then multiply by the FNV prime, per unit.
std::uint64_t legacy(const std::vector<std::uint64_t>& units) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t u : units) h = (h ^ u) * 1099511628211ull;
  return h;
}

std::vector<std::uint64_t> bytes_of(std::string_view s) {
  std::vector<std::uint64_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

TEST(Hash, PublishedVectors) {
  EXPECT_EQ(standard(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(standard("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(standard("foobar"), 0x85944171f73967e8ull);
  static_assert(Fnv1a(Fnv1a::kStandardBasis).update("a").value() == 0xaf63dc4c8601ec8cull);
}

TEST(Hash, RanktuneStartValue) {
  EXPECT_EQ(fnv1a(""), 0x14650fb0739d0383ull);
  EXPECT_EQ(fnv1a("a"), 0x44bd8ad473cd9906ull);
  EXPECT_EQ(fnv1a("foobar"), 0x88fad7c0a8ff07f2ull);
  EXPECT_EQ(Fnv1a().value(), Fnv1a::kRanktuneBasis);
}

TEST(Hash, IncrementalEqualsOneShot) {
  EXPECT_EQ(Fnv1a().update("train.lr").update("=").update("3e-4").update("\n").value(), fnv1a("train.lr=3e-4\n"));
  Fnv1a bytes;
  for (char c : std::string("foobar")) bytes.update_byte(static_cast<std::uint8_t>(c));
  EXPECT_EQ(bytes.value(), fnv1a("foobar"));
}

TEST(Hash, MatchesTheLoopsItReplaced) {
  // Text (config hash, base identity, parameter lists), high bytes included.
  const std::string text = std::string("model.layers.0.self_attn.q_proj.weight\t") + '\xe9' + '\xff' + "\n";
  EXPECT_EQ(fnv1a(text), legacy(bytes_of(text)));
  // Tokenizer fingerprint: each file's bytes, then a 0xff separator.
  std::vector<std::uint64_t> units = bytes_of("{}");
  units.push_back(0xff);
  EXPECT_EQ(Fnv1a().update("{}").update_byte(0xff).value(), legacy(units));
  // CPU mask: each set CPU's index as one unit, indices past 255 included.
  Fnv1a mask;
  for (std::uint64_t c : {0, 3, 255, 256, 1023}) mask.update_word(c);
  EXPECT_EQ(mask.value(), legacy({0, 3, 255, 256, 1023}));
}

}  // namespace
}  // namespace ranktune
