// defines: TokenData (the packed training and held-out rows of a run) and token_data_load, which builds them from
// [data]: the generated default corpus when data.path is empty, a dataset written by `ranktune prepare` (.h5 or a
// shard directory), else text/JSONL files (records as in docs/data.md) tokenized with data.tokenizer and packed into
// rows of train.seq_len. Also batch_tensors, which turns a set of row indices into the model's input tensors,
// with the document index of each token when packed documents must not attend to each other (data.packing_attention).
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
  PackingAttention packing_attention = PackingAttention::isolated;  // data.packing_attention
};

// `tokenizer`: the one the command already chose and checked (app/tokenizer_choice.h); null = config_tokenizer(cfg).
// `verified`: a prepared dataset's files were read through for their CRC32C already (token_dataset_verify_files,
// agreed over the ranks), so only their headers are checked again here.
TokenData token_data_load(const Config& cfg, std::unique_ptr<Tokenizer> tokenizer = nullptr, bool verified = false);

struct BatchTensors {
  at::Tensor tokens;     // [b, T] int64
  at::Tensor targets;    // [b, T] int64, -100 = no loss (targets are already shifted: targets[t] follows tokens[t])
  at::Tensor positions;  // [b, T] int64, restarting at each document
  // [b, T] int64, the document of each token (row_documents), for Llama::forward; undefined = plain causal attention,
  // which is what isolation computes anyway when no row has a target after its first document. It stays on the host
  // (in pinned memory for a CUDA device): attention_mask makes the mask there and copies it without a host sync.
  at::Tensor documents;
  long loss_tokens = 0;  // targets that count
};

// `attention` isolated: documents is set when a row holds a target in its second or a later document (then the loss
// differs from plain causal attention); otherwise, and for shared, it is left undefined so attention stays on the
// mask-free path (is_causal, the flash kernel on GPU).
BatchTensors batch_tensors(const RowStore& rows, const std::vector<std::int64_t>& indices, const at::Device& device,
                           PackingAttention attention);

long count_loss_tokens(const RowStore& rows, const std::vector<std::int64_t>& indices);

}  // namespace ranktune
