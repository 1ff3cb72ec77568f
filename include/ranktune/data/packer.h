// defines: Packer, which packs tokenized documents into fixed-length rows for training, and PackedRow/PackStats;
// PackingAttention (data.packing_attention) and row_documents, the document boundaries a row's position ids encode.
// Rows carry pre-shifted targets (targets[t] is the token to predict at position t, or -100 for no loss) and
// position ids that restart at 0 at every document: they are the boundaries (nothing else is stored), from which
// the trainer builds the per-document attention mask. Documents never see each other's tokens as targets.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ranktune/data/document.h"

namespace ranktune {

constexpr std::int32_t kIgnoreTarget = -100;

enum class Overflow {
  truncate,  // keep the first seq_len tokens of a longer document, drop the rest
  split,     // cut it into pieces of seq_len overlapping by one token, so every target is trained exactly once
};

Overflow overflow_parse(const std::string& name);  // "truncate" | "split"; throws DataError

// What a token of a packed row attends to (data.packing_attention).
enum class PackingAttention {
  isolated,  // the earlier tokens of its own document only (a block-diagonal causal mask): as if trained alone
  shared,    // every earlier token of the row, other documents included (plain causal attention)
};

PackingAttention packing_attention_parse(const std::string& name);  // "isolated" | "shared"; throws DataError

struct PackOptions {
  int seq_len = 128;
  Overflow overflow = Overflow::split;
  std::int32_t pad_id = 0;  // input id of padding (its targets are -100 whatever it is)
  // false (chat/instruction data): a document that does not fit in what is left of a row starts the next row, so
  // a conversation is never cut unless it is longer than a row. true (plain text, pretraining style): it fills the
  // row and continues in the next one (overlapping by one token), so rows have no padding except the last.
  bool fill_rows = false;
};

struct PackedRow {
  std::vector<std::int32_t> input_ids;     // seq_len
  std::vector<std::int32_t> targets;       // seq_len, pre-shifted; kIgnoreTarget = no loss
  std::vector<std::int32_t> position_ids;  // seq_len, 0 at each document start (padding counts as one more)
};

struct PackStats {
  long documents = 0;            // documents given to add()
  long empty_documents = 0;      // with no tokens: skipped
  long untrained_documents = 0;  // placed, but no token of theirs is a target (e.g. a prompt with no reply)
  long rows = 0;
  long tokens = 0;  // document tokens placed in rows
  long pad_tokens = 0;
  long target_tokens = 0;  // positions with a target
  long truncated_documents = 0;
  long truncated_tokens = 0;  // dropped by truncation
  long split_documents = 0;   // longer than a row (overflow = split), or continued across rows (fill_rows)
  long split_pieces = 0;
  std::string summary() const;  // one line for the log
};

// The document index (0, 1, ...) of each position of a row: a document starts wherever a position id is not the
// previous one plus one (transformers' rule for packed position_ids, find_packed_sequence_indices), so each piece of
// a split document, and the padding at the end of a row, is a document of its own.
std::vector<std::int32_t> row_documents(const std::vector<std::int32_t>& position_ids);

// Greedy, order-preserving: documents go into the current row while they fit; what happens to one that does not
// is PackOptions::fill_rows. Rows go to the sink as soon as they are complete.
class Packer {
 public:
  using Sink = std::function<void(const PackedRow&)>;
  Packer(PackOptions options, Sink sink);  // throws DataError if seq_len < 2
  void add(const TokenizedDoc& doc);
  void finish();  // pads and emits the last partial row
  const PackStats& stats() const { return stats_; }

 private:
  void place(const TokenizedDoc& doc, std::size_t begin, std::size_t end);
  void place_filling(const TokenizedDoc& doc, std::size_t n);
  void flush();

  PackOptions opt_;
  Sink sink_;
  PackedRow row_;
  PackStats stats_;
};

}  // namespace ranktune
