// BPE merging with a heap of candidate pairs over a linked list of symbols, checked lazily for staleness (the
// scheme of HF's `Word::merge_all`, which fixes the tie-breaking that makes the ids match). Words already merged
// come from a per-thread cache: text is mostly the same few thousand words.
#include "ranktune/data/bpe.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <functional>

#include "ranktune/data/data_error.h"
#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

constexpr char32_t kCharTable = 0x800;  // one- and two-byte UTF-8 characters: every byte-level token character

// Word -> ids, open addressing over a power-of-two table, keys and ids in two arenas. Bounded: emptied when full,
// so a long run holds at most kMaxSlots / 2 words (a few MB) per thread.
class WordCache {
 public:
  static constexpr std::size_t kMaxWord = 256;  // longer pre-tokens (runs of spaces, long numbers) are not kept

  std::uint64_t owner = 0;

  void reset(std::uint64_t new_owner) {
    owner = new_owner;
    slots_.assign(kMinSlots, Slot{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }

  bool find(std::string_view w, std::size_t hash, std::vector<std::int32_t>& out) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return false;
      if (s.hash == hash && s.key_len == w.size() && std::memcmp(keys_.data() + s.key, w.data(), w.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids, ids_.begin() + s.ids + s.n_ids);
        return true;
      }
    }
  }

  void insert(std::string_view w, std::size_t hash, const std::int32_t* ids, std::size_t n) {
    if (w.size() > kMaxWord) return;
    if (2 * (used_ + 1) > slots_.size()) {
      if (slots_.size() >= kMaxSlots) {
        reset(owner);
      } else {
        grow();
      }
    }
    Slot s{hash, static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(w.size()),
           static_cast<std::uint32_t>(ids_.size()), static_cast<std::uint32_t>(n)};
    keys_.append(w);
    ids_.insert(ids_.end(), ids, ids + n);
    place(s);
    ++used_;
  }

 private:
  static constexpr std::size_t kMinSlots = 1024, kMaxSlots = std::size_t{1} << 17;
  struct Slot {
    std::size_t hash = 0;
    std::uint32_t key = 0, key_len = 0;  // key_len 0: empty (words are never empty)
    std::uint32_t ids = 0, n_ids = 0;
  };

  void place(const Slot& s) {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = s.hash & mask;
    while (slots_[i].key_len != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }

  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.key_len != 0) place(s);
    }
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<std::int32_t> ids_;
  std::size_t used_ = 0;
};

struct Symbol {
  std::int32_t id;
  std::int32_t prev;
  std::int32_t next;
  bool alive;
};

struct Candidate {
  std::int32_t rank;
  std::int32_t pos;
  std::int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

// Reused across calls on one thread: a word that misses the cache allocates nothing.
struct MergeScratch {
  std::vector<Symbol> sym;
  std::vector<Candidate> heap;
};

std::uint64_t next_serial() {
  static std::atomic<std::uint64_t> serial{0};
  return ++serial;
}

}  // namespace

BpeModel::BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& origin)
    : vocab_(std::move(vocab)), options_(std::move(options)), serial_(next_serial()) {
  std::int32_t max_id = -1;
  for (const auto& [tok, id] : vocab_) {
    if (id < 0) throw DataError(origin + ": vocabulary entry '" + tok + "' has a negative id");
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(static_cast<std::size_t>(max_id + 1), nullptr);
  for (const auto& [tok, id] : vocab_) id_to_token_[static_cast<std::size_t>(id)] = &tok;

  auto need = [&](const std::string& tok, std::size_t rank) {
    auto it = vocab_.find(tok);
    if (it == vocab_.end()) {
      throw DataError(origin + ": merge " + std::to_string(rank) + " uses '" + tok +
                          "', which is not in the vocabulary",
                      "the tokenizer.json is inconsistent; re-save it with HF tokenizers");
    }
    return it->second;
  };
  std::size_t capacity = 2;
  while (capacity < 2 * merges.size()) capacity *= 2;
  merge_shift_ = 64 - std::countr_zero(capacity);
  merges_.assign(capacity, MergeSlot{});
  std::string joined;
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    joined.assign(a).append(b);
    const std::int32_t ia = need(a, r), ib = need(b, r), merged = need(joined, r);
    const std::uint64_t key = pair_key(ia, ib);
    std::size_t i = slot_of(key);
    while (merges_[i].key != key && merges_[i].key != MergeSlot{}.key) i = (i + 1) & (capacity - 1);
    if (merges_[i].key != key) merges_[i] = {key, Merge{static_cast<std::int32_t>(r), merged}};  // first rank wins
  }
  if (options_.unk_token) unk_id_ = need(*options_.unk_token, 0);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  char_ids_.assign(kCharTable, -1);
  std::string ch;
  for (char32_t cp = 0; cp < kCharTable; ++cp) {
    ch.clear();
    utf8_append(ch, cp);
    if (auto it = vocab_.find(ch); it != vocab_.end()) char_ids_[cp] = it->second;
  }
}

const BpeModel::Merge* BpeModel::find_merge(std::int32_t a, std::int32_t b) const {
  const std::uint64_t key = pair_key(a, b);
  const std::size_t mask = merges_.size() - 1;
  for (std::size_t i = slot_of(key);; i = (i + 1) & mask) {
    const MergeSlot& s = merges_[i];
    if (s.key == key) return &s.merge;
    if (s.key == MergeSlot{}.key) return nullptr;
  }
}

// A character of a word: one- and two-byte ones from the table, others (and malformed bytes) from the vocabulary.
std::int32_t BpeModel::char_id(std::string_view ch) const {
  const auto b0 = static_cast<unsigned char>(ch[0]);
  if (ch.size() == 1 && b0 < 0x80) return char_ids_[b0];
  if (ch.size() == 2 && (b0 >> 5) == 0x6 && (static_cast<unsigned char>(ch[1]) & 0xC0) == 0x80) {
    const char32_t cp = (static_cast<char32_t>(b0 & 0x1F) << 6) | (static_cast<unsigned char>(ch[1]) & 0x3F);
    if (cp >= 0x80) return char_ids_[cp];  // C0/C1 leads are overlong: not the character they decode to
  }
  auto id = token_to_id(ch);
  return id ? *id : -1;
}

std::optional<std::int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(std::int32_t id) const {
  if (id < 0 || id >= size()) return nullptr;
  return id_to_token_[static_cast<std::size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() > WordCache::kMaxWord) return tokenize_uncached(word, out);
  thread_local WordCache cache;
  if (cache.owner != serial_) cache.reset(serial_);
  const std::size_t hash = std::hash<std::string_view>{}(word);
  if (cache.find(word, hash, out)) return;
  const std::size_t before = out.size();
  tokenize_uncached(word, out);
  cache.insert(word, hash, out.data() + before, out.size() - before);
}

void BpeModel::tokenize_uncached(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }

  thread_local MergeScratch scratch;
  std::vector<Symbol>& sym = scratch.sym;
  sym.clear();
  auto add = [&](std::int32_t id) {
    const auto n = static_cast<std::int32_t>(sym.size());
    if (n > 0) sym.back().next = n;
    sym.push_back({id, n - 1, -1, true});
  };

  // One symbol per character; unknown characters become bytes (byte fallback) or unk (fused if asked).
  bool pending_unk = false;
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t len = utf8_len(static_cast<unsigned char>(word[i]));
    const std::string_view ch = word.substr(i, len);
    i += len;
    if (const std::int32_t id = char_id(ch); id >= 0) {
      if (pending_unk) add(*unk_id_), pending_unk = false;
      add(id);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        if (pending_unk) add(*unk_id_), pending_unk = false;
        for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !options_.fuse_unk) add(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(*unk_id_);

  std::vector<Candidate>& heap = scratch.heap;
  heap.clear();
  const auto later = std::greater<>();  // a min-heap: the lowest rank, then the leftmost, on top
  auto push = [&](Candidate c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (std::size_t p = 0; p + 1 < sym.size(); ++p) {
    if (const Merge* m = find_merge(sym[p].id, sym[p + 1].id)) {
      heap.push_back({m->rank, static_cast<std::int32_t>(p), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = sym[static_cast<std::size_t>(top.pos)];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = sym[static_cast<std::size_t>(cur.next)];
    const Merge* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale: one side was merged since
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) sym[static_cast<std::size_t>(cur.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = find_merge(sym[static_cast<std::size_t>(cur.prev)].id, cur.id)) {
        push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* nm = find_merge(cur.id, sym[static_cast<std::size_t>(cur.next)].id)) {
        push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& s : sym) {
    if (s.alive) out.push_back(s.id);
  }
}

}  // namespace ranktune
