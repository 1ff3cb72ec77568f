// defines: TokenData (the packed training and held-out rows of a run) and token_data_load, which builds them from
// [data]: the generated default corpus when data.path is empty, a dataset written by `ranktune prepare` (.h5 or a
// shard directory), else text/JSONL files (records as in docs/data.md) tokenized with data.tokenizer and packed into
// rows of train.seq_len. Also batch_tensors, which turns a set of row indices into the model's input tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/data/packer.h"
#include "ranktune/data/tokenizer.h"
#include "ranktune/io/row_store.h"

namespace ranktune {

struct TokenData {
  std::unique_ptr<Tokenizer> tokenizer;
  RowStore train;  // a prepared dataset's rows are read when a batch needs them; other sources are in memory
  RowStore val;
  std::string source;   // "generated tiny corpus (2000 documents)" or the file path
  std::string summary;  // packing statistics, for the log
};

TokenData token_data_load(const Config& cfg);

struct BatchTensors {
  at::Tensor tokens;     // [b, T] int64
  at::Tensor targets;    // [b, T] int64, -100 = no loss (targets are already shifted: targets[t] follows tokens[t])
  at::Tensor positions;  // [b, T] int64, restarting at each document
  long loss_tokens = 0;  // targets that count
};

BatchTensors batch_tensors(const RowStore& rows, const std::vector<std::int64_t>& indices, const at::Device& device);

long count_loss_tokens(const RowStore& rows, const std::vector<std::int64_t>& indices);

}  // namespace ranktune
