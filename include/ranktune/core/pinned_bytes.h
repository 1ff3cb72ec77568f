// defines: pinned_block_bytes, the page-locked host memory that LibTorch's caching host allocator takes for a request
// of `bytes` (torch 2.11's CachingHostAllocator rounds every block up to a power of two, to reuse it). The activation
// offload's cap and the planner count what is pinned, not what is asked: an 8B layer input of 344,064 tokens asks
// 2.625 GiB and pins 4.
#pragma once

#include <bit>
#include <cstdint>

namespace ranktune {

inline std::int64_t pinned_block_bytes(std::int64_t bytes) {
  return bytes <= 0 ? 0 : static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(bytes)));
}

}  // namespace ranktune
