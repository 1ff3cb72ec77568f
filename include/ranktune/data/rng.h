// defines: SplitMix64, the data layer's random generator. Its sequence is fixed by this code (unlike
// std::uniform_int_distribution, whose results differ between standard libraries), so shuffles and the generated
// corpus are identical on every machine, compiler and rank.
#pragma once

#include <cstdint>

namespace ranktune {

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, bound), bound > 0, without modulo bias (rejection of the incomplete last block).
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    std::uint64_t x;
    do {
      x = next();
    } while (x >= limit);
    return x % bound;
  }

 private:
  std::uint64_t state_;
};

}  // namespace ranktune
