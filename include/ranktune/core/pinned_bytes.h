// defines: pinned_pieces and pinned_block_bytes: how an offloaded activation of `bytes` is split for LibTorch's
// caching host allocator, and the page-locked host memory its pieces take. torch 2.11's CachingHostAllocator rounds
// every block up to a power of two, to reuse it: one 2.625 GiB layer input (Llama-3-8B at 344,064 tokens) pinned
// 4 GiB. So an input goes to the host in power-of-two pieces, largest first (2 GiB + 512 MiB + 128 MiB: exactly its
// size); the last piece holds the rest and is the one rounded up, once the pieces reach kMaxPinnedPieces or the rest is
// at most kMinPinnedPiece. What is pinned beyond `bytes` is then below 1 MiB or 1/32 of `bytes`. The activation
// offload's cap and the planner count the pinned bytes, not the asked ones.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

namespace ranktune {

inline constexpr int kMaxPinnedPieces = 6;
inline constexpr std::int64_t kMinPinnedPiece = std::int64_t{1} << 20;

inline std::vector<std::int64_t> pinned_pieces(std::int64_t bytes) {
  std::vector<std::int64_t> pieces;
  for (std::int64_t left = bytes; left > 0;) {
    const std::int64_t p = static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(left)));
    const bool last = static_cast<int>(pieces.size()) + 1 == kMaxPinnedPieces || left <= kMinPinnedPiece;
    pieces.push_back(last ? left : p);
    left -= pieces.back();
  }
  return pieces;
}

inline std::int64_t pinned_block_bytes(std::int64_t bytes) {
  std::int64_t pinned = 0;
  for (const std::int64_t p : pinned_pieces(bytes))
    pinned += static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(p)));
  return pinned;
}

}  // namespace ranktune
