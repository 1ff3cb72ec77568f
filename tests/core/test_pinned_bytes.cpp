// pinned_pieces and pinned_block_bytes (core/pinned_bytes.h): an offloaded activation split into power-of-two pieces
// so the caching host allocator, which rounds every block up to a power of two, pins (almost) only what is asked.
// Expected values are worked out by hand here for the sizes the runs meet, and the bounds checked over many sizes.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "ranktune/core/pinned_bytes.h"

namespace ranktune {
namespace {

constexpr std::int64_t MiB = std::int64_t{1} << 20, GiB = std::int64_t{1} << 30;

TEST(PinnedPieces, TheSizesOfTheRuns) {
  // Llama-3-8B at 344,064 tokens: 344,064 x 4096 x 2 B = 2.625 GiB = 2 GiB + 512 MiB + 128 MiB, pinned exactly (the
  // allocator alone pinned a 4 GiB block).
  const std::int64_t input = 344064LL * 4096 * 2;
  EXPECT_EQ(pinned_pieces(input), (std::vector<std::int64_t>{2 * GiB, 512 * MiB, 128 * MiB}));
  EXPECT_EQ(pinned_block_bytes(input), input);
  // 262,144 tokens: 2 GiB, one piece.
  EXPECT_EQ(pinned_pieces(262144LL * 4096 * 2), (std::vector<std::int64_t>{2 * GiB}));
  // Small inputs are one piece, rounded up as before.
  EXPECT_EQ(pinned_pieces(204800), (std::vector<std::int64_t>{204800}));
  EXPECT_EQ(pinned_block_bytes(204800), 256 * 1024);
  EXPECT_EQ(pinned_block_bytes(MiB), MiB);
  EXPECT_EQ(pinned_block_bytes(MiB + 2), MiB + 2);  // 1 MiB, then the 2 bytes left in a 2-byte block
  EXPECT_EQ(pinned_block_bytes(0), 0);
  EXPECT_TRUE(pinned_pieces(0).empty());
  // Seven set bits above 1 MiB: five whole pieces, the sixth holds the rest (64 + 32 MiB + 8 KiB -> 128 MiB).
  const std::int64_t seven = 2 * GiB + GiB + 512 * MiB + 256 * MiB + 128 * MiB + 64 * MiB + 32 * MiB + 8192;
  EXPECT_EQ(pinned_pieces(seven),
            (std::vector<std::int64_t>{2 * GiB, GiB, 512 * MiB, 256 * MiB, 128 * MiB, 64 * MiB + 32 * MiB + 8192}));
  EXPECT_EQ(pinned_block_bytes(seven), 2 * GiB + GiB + 512 * MiB + 256 * MiB + 128 * MiB + 128 * MiB);
}

TEST(PinnedPieces, BoundsOverManySizes) {
  std::mt19937_64 gen(7);
  std::vector<std::int64_t> sizes;
  for (int i = 0; i < 20000; ++i) sizes.push_back(2 * static_cast<std::int64_t>(gen() % (std::uint64_t{1} << 36)));
  for (std::int64_t s = 2; s < 4 * MiB; s = s * 3 / 2 + 2) sizes.push_back(s);
  for (const std::int64_t bytes : sizes) {
    const std::vector<std::int64_t> p = pinned_pieces(bytes);
    ASSERT_FALSE(p.empty()) << bytes;
    ASSERT_LE(static_cast<int>(p.size()), kMaxPinnedPieces) << bytes;
    EXPECT_EQ(std::accumulate(p.begin(), p.end(), std::int64_t{0}), bytes);
    for (std::size_t i = 0; i + 1 < p.size(); ++i) {
      EXPECT_TRUE(std::has_single_bit(static_cast<std::uint64_t>(p[i]))) << bytes;  // whole blocks, no rounding
      EXPECT_GT(p[i], p[i + 1]) << bytes;                                           // largest first
      EXPECT_GE(p[i], MiB) << bytes;  // so every piece but the last is a whole number of elements
      EXPECT_EQ(p[i] % 8, 0) << bytes;
    }
    const std::int64_t waste = pinned_block_bytes(bytes) - bytes;
    EXPECT_GE(waste, 0);
    EXPECT_TRUE(waste < MiB || waste <= bytes / 32) << bytes << " pins " << waste << " more";
  }
}

}  // namespace
}  // namespace ranktune
