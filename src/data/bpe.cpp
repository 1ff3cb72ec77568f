// BPE merging with a heap of candidate pairs over a linked list of symbols, checked lazily for staleness (the
// scheme of HF's `Word::merge_all`, which fixes the tie-breaking that makes the ids match).
#include "ranktune/data/bpe.h"

#include <cstdio>
#include <queue>

#include "ranktune/data/data_error.h"
#include "ranktune/data/unicode.h"

namespace ranktune {

BpeModel::BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& origin)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
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
  merges_.reserve(merges.size());
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    const std::int32_t ia = need(a, r), ib = need(b, r), merged = need(a + b, r);
    merges_.try_emplace(pair_key(ia, ib), Merge{static_cast<std::int32_t>(r), merged});
  }
  if (options_.unk_token) unk_id_ = need(*options_.unk_token, 0);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

const BpeModel::Merge* BpeModel::find_merge(std::int32_t a, std::int32_t b) const {
  auto it = merges_.find(pair_key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
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
  if (options_.ignore_merges) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }

  struct Symbol {
    std::int32_t id;
    std::int32_t prev;
    std::int32_t next;
    bool alive;
  };
  std::vector<Symbol> sym;
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
    if (auto id = token_to_id(ch)) {
      if (pending_unk) add(*unk_id_), pending_unk = false;
      add(*id);
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

  struct Candidate {
    std::int32_t rank;
    std::int32_t pos;
    std::int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  for (std::size_t p = 0; p + 1 < sym.size(); ++p) {
    if (const Merge* m = find_merge(sym[p].id, sym[p + 1].id)) {
      heap.push({m->rank, static_cast<std::int32_t>(p), m->new_id});
    }
  }
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
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
        heap.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* nm = find_merge(cur.id, sym[static_cast<std::size_t>(cur.next)].id)) {
        heap.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& s : sym) {
    if (s.alive) out.push_back(s.id);
  }
}

}  // namespace ranktune
