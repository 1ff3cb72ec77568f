// defines: Fnv1a and fnv1a(), the one 64-bit FNV-1a of ranktune: the config hash, the tokenizer fingerprint, a LoRA
// checkpoint's base-model identity, the CPU-mask hash and DDP's parameter-list check all use it, so their values stay
// comparable. They are stored in checkpoints and compared across ranks: the arithmetic must never change.
#pragma once

#include <cstdint>
#include <string_view>

namespace ranktune {

// Starts at kRanktuneBasis, 1469598103934665603 (0x14650fb0739d0383): the published offset basis
// 14695981039346656037 (0xcbf29ce484222325) with its last decimal digit missing. Prime, order (xor, then multiply)
// and byte handling are FNV-1a's; only the start differs, and it stays because the values already in checkpoints were
// made with it. Fnv1a(Fnv1a::kStandardBasis) is textbook FNV-1a 64 (the tests check the published vectors with it).
class Fnv1a {
 public:
  static constexpr std::uint64_t kPrime = 1099511628211ull;
  static constexpr std::uint64_t kRanktuneBasis = 1469598103934665603ull;
  static constexpr std::uint64_t kStandardBasis = 14695981039346656037ull;

  constexpr explicit Fnv1a(std::uint64_t basis = kRanktuneBasis) : h_(basis) {}

  constexpr Fnv1a& update(std::string_view bytes) {
    for (char c : bytes) update_byte(static_cast<std::uint8_t>(c));
    return *this;
  }
  constexpr Fnv1a& update_byte(std::uint8_t byte) { return update_word(byte); }
  // One step with the whole of `word` in place of a byte (not its 8 bytes): the CPU-mask hash feeds CPU indices,
  // which may exceed 255, this way. For word < 256 it is update_byte.
  constexpr Fnv1a& update_word(std::uint64_t word) {
    h_ = (h_ ^ word) * kPrime;
    return *this;
  }
  constexpr std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_;
};

// The hash of one string, from ranktune's start value.
constexpr std::uint64_t fnv1a(std::string_view bytes) { return Fnv1a().update(bytes).value(); }

}  // namespace ranktune
