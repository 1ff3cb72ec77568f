// Sequential greedy packing; see packer.h for the row layout.
#include "ranktune/data/packer.h"

#include <sstream>

#include "ranktune/data/data_error.h"

namespace ranktune {

Overflow overflow_parse(const std::string& name) {
  if (name == "truncate") return Overflow::truncate;
  if (name == "split") return Overflow::split;
  throw DataError("unknown overflow policy '" + name + "'", "use truncate or split");
}

PackingAttention packing_attention_parse(const std::string& name) {
  if (name == "isolated") return PackingAttention::isolated;
  if (name == "shared") return PackingAttention::shared;
  throw DataError("unknown packing attention '" + name + "'", "use isolated or shared");
}

std::vector<std::int32_t> row_documents(const std::vector<std::int32_t>& position_ids) {
  std::vector<std::int32_t> doc(position_ids.size());
  for (std::size_t t = 1; t < position_ids.size(); ++t)
    doc[t] = doc[t - 1] + (position_ids[t] != position_ids[t - 1] + 1);
  return doc;
}

std::string PackStats::summary() const {
  std::ostringstream os;
  const long slots = tokens + pad_tokens;
  os << documents << " documents -> " << rows << " rows; " << tokens << " tokens, " << pad_tokens << " padding ("
     << (slots ? 100.0 * pad_tokens / slots : 0.0) << "%), " << target_tokens << " targets; " << truncated_documents
     << " truncated (" << truncated_tokens << " tokens dropped), " << split_documents << " split into " << split_pieces
     << " pieces, " << empty_documents << " empty, " << untrained_documents << " without targets";
  return os.str();
}

Packer::Packer(PackOptions options, Sink sink) : opt_(options), sink_(std::move(sink)) {
  if (opt_.seq_len < 2) throw DataError("seq_len must be at least 2, got " + std::to_string(opt_.seq_len));
}

void Packer::add(const TokenizedDoc& doc) {
  if (doc.ids.size() != doc.train.size()) {
    throw DataError("a document has " + std::to_string(doc.ids.size()) + " ids but " +
                    std::to_string(doc.train.size()) + " train flags");
  }
  ++stats_.documents;
  const std::size_t n = doc.ids.size(), len = static_cast<std::size_t>(opt_.seq_len);
  if (n == 0) {
    ++stats_.empty_documents;
    return;
  }
  bool any_target = false;
  for (std::size_t i = 1; i < n; ++i) any_target = any_target || doc.train[i];
  if (!any_target) ++stats_.untrained_documents;
  if (n > len && opt_.overflow == Overflow::truncate) {
    ++stats_.truncated_documents;
    stats_.truncated_tokens += static_cast<long>(n - len);
  }
  const std::size_t keep = opt_.overflow == Overflow::truncate ? std::min(n, len) : n;
  if (opt_.fill_rows) {
    place_filling(doc, keep);
  } else if (keep <= len) {
    place(doc, 0, keep);
  } else {
    ++stats_.split_documents;
    for (std::size_t begin = 0;; begin += len - 1) {
      const std::size_t end = std::min(n, begin + len);
      ++stats_.split_pieces;
      place(doc, begin, end);
      if (end == n) break;
    }
  }
}

// Pieces that fill each row to the end; consecutive pieces share one token so no target is lost.
void Packer::place_filling(const TokenizedDoc& doc, std::size_t n) {
  const std::size_t len = static_cast<std::size_t>(opt_.seq_len);
  std::size_t begin = 0, pieces = 0;
  while (true) {
    if (len - row_.input_ids.size() < 2 && n - begin > 1) flush();  // one slot cannot hold a target
    const std::size_t end = std::min(n, begin + (len - row_.input_ids.size()));
    place(doc, begin, end);
    ++pieces;
    if (end == n) break;
    begin = end - 1;
  }
  if (pieces > 1) {
    ++stats_.split_documents;
    stats_.split_pieces += static_cast<long>(pieces);
  }
}

void Packer::place(const TokenizedDoc& doc, std::size_t begin, std::size_t end) {
  const std::size_t m = end - begin, len = static_cast<std::size_t>(opt_.seq_len);
  if (row_.input_ids.size() + m > len) flush();
  for (std::size_t i = begin; i < end; ++i) {
    row_.input_ids.push_back(doc.ids[i]);
    const bool has_next = i + 1 < end && doc.train[i + 1];
    row_.targets.push_back(has_next ? doc.ids[i + 1] : kIgnoreTarget);
    row_.position_ids.push_back(static_cast<std::int32_t>(i - begin));
    stats_.target_tokens += has_next;
  }
  stats_.tokens += static_cast<long>(m);
  if (row_.input_ids.size() == len) flush();
}

void Packer::flush() {
  if (row_.input_ids.empty()) return;
  const std::size_t len = static_cast<std::size_t>(opt_.seq_len);
  std::int32_t pos = 0;
  while (row_.input_ids.size() < len) {
    row_.input_ids.push_back(opt_.pad_id);
    row_.targets.push_back(kIgnoreTarget);
    row_.position_ids.push_back(pos++);
    ++stats_.pad_tokens;
  }
  ++stats_.rows;
  sink_(row_);
  row_ = PackedRow{};
}

void Packer::finish() { flush(); }

}  // namespace ranktune
