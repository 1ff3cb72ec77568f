// defines: BpeModel, the "model" step of a HF BPE tokenizer: vocabulary, merges by rank, unknown-token and
// byte-fallback handling for one pre-token. The merge order is HF's: lowest rank first, leftmost on ties, so the
// ids equal HF `tokenizers` for the same vocabulary and merges. Each thread keeps a bounded cache of the words it
// has merged (as HF does), so `tokenize` is const and safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ranktune {

struct BpeOptions {
  std::optional<std::string> unk_token;  // used for a character the vocabulary lacks (after byte fallback)
  bool byte_fallback = false;            // such a character becomes its UTF-8 bytes as <0xNN> tokens
  bool fuse_unk = false;                 // consecutive unknown characters become one unk token
  bool ignore_merges = false;            // a pre-token that is itself in the vocabulary is taken whole (Llama 3)
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Throws DataError if a merge names a token (or a merged result) missing from the vocabulary, or if unk_token is
  // set but missing; `origin` (the file) is named in the message.
  BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::string& origin);

  // Appends the ids of one pre-token (already normalized and pre-tokenized) to out.
  void tokenize(std::string_view word, std::vector<std::int32_t>& out) const;
  // The same without the per-thread word cache (what the cache holds; tests compare the two).
  void tokenize_uncached(std::string_view word, std::vector<std::int32_t>& out) const;

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  // The token text of an id, or nullptr if no vocabulary entry has it.
  const std::string* id_to_token(std::int32_t id) const;
  // One past the largest id in the vocabulary.
  std::int32_t size() const { return static_cast<std::int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t new_id;
  };
  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  // Open addressing over a power-of-two table (load <= 1/2): the merge lookup is the inner loop of every word.
  struct MergeSlot {
    std::uint64_t key = ~std::uint64_t{0};  // no pair of non-negative ids packs to all ones: an empty slot
    Merge merge{};
  };
  std::size_t slot_of(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> merge_shift_);  // the product's high bits
  }
  const Merge* find_merge(std::int32_t a, std::int32_t b) const;
  std::int32_t char_id(std::string_view ch) const;

  TokenMap vocab_;
  std::vector<const std::string*> id_to_token_;
  std::vector<MergeSlot> merges_;
  int merge_shift_ = 63;
  std::vector<std::int32_t> char_ids_;  // by code point below 0x800: the id of that one-character token, or -1
  BpeOptions options_;
  std::optional<std::int32_t> unk_id_;
  std::int32_t byte_ids_[256];  // <0xNN> ids for byte fallback, -1 where missing
  std::uint64_t serial_;        // tells the per-thread word caches of two models apart
};

}  // namespace ranktune
