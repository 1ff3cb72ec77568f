// defines: RowStore, the packed rows a run trains or evaluates on: held in memory (the generated corpus, text packed
// at start) or a row range of a prepared token dataset read on demand when a batch is built, so a dataset larger
// than memory trains without being loaded. Torch-free; batch_tensors (train/token_data.h) makes the tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ranktune/data/packer.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {

class RowStore {
 public:
  RowStore() = default;
  explicit RowStore(std::vector<PackedRow> rows);
  // Rows [begin, begin + count) of the dataset; the reader is shared by the train and held-out stores.
  RowStore(std::shared_ptr<const TokenDatasetReader> reader, std::int64_t begin, std::int64_t count);

  std::size_t size() const { return static_cast<std::size_t>(count_); }
  bool empty() const { return count_ == 0; }
  // The rows at these indices, in the order given (a dataset: one row-range read per row). DataError naming the
  // file if a read fails (a damaged chunk).
  std::vector<PackedRow> rows(const std::vector<std::int64_t>& indices) const;
  PackedRow row(std::int64_t index) const;

 private:
  std::shared_ptr<const std::vector<PackedRow>> memory_;
  std::shared_ptr<const TokenDatasetReader> reader_;
  std::int64_t begin_ = 0;
  std::int64_t count_ = 0;
};

}  // namespace ranktune
