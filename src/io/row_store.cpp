#include "ranktune/io/row_store.h"

#include <string>

#include "ranktune/data/data_error.h"

namespace ranktune {

RowStore::RowStore(std::vector<PackedRow> rows)
    : memory_(std::make_shared<const std::vector<PackedRow>>(std::move(rows))),
      count_(static_cast<std::int64_t>(memory_->size())) {}

RowStore::RowStore(std::shared_ptr<const TokenDatasetReader> reader, std::int64_t begin, std::int64_t count)
    : reader_(std::move(reader)), begin_(begin), count_(count) {}

PackedRow RowStore::row(std::int64_t index) const {
  if (index < 0 || index >= count_)
    throw DataError("row " + std::to_string(index) + " is outside the " + std::to_string(count_) + " rows held");
  if (memory_) return (*memory_)[static_cast<std::size_t>(index)];
  return std::move(reader_->read(begin_ + index, 1).front());
}

std::vector<PackedRow> RowStore::rows(const std::vector<std::int64_t>& indices) const {
  std::vector<PackedRow> out;
  out.reserve(indices.size());
  for (auto i : indices) out.push_back(row(i));
  return out;
}

}  // namespace ranktune
