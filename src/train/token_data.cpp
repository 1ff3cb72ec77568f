#include "ranktune/train/token_data.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/document.h"
#include "ranktune/data/record.h"
#include "ranktune/data/tiny_corpus.h"

namespace ranktune {
namespace {

// Enough generated documents that the default 200 steps of 8 rows rarely repeat a row.
constexpr std::size_t kTinyDocuments = 2000;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

TokenData token_data_load(const Config& cfg) {
  TokenData data;
  try {
    data.tokenizer = tokenizer_load(cfg.data.tokenizer);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError("data.tokenizer '" + cfg.data.tokenizer + "': " + e.what());
  }
  const Tokenizer& tok = *data.tokenizer;
  PackOptions pack;
  pack.seq_len = cfg.train.seq_len;
  pack.pad_id = tok.pad_id().value_or(tok.eos_id().value_or(0));
  std::vector<PackedRow> rows;
  Packer packer(pack, [&rows](const PackedRow& r) { rows.push_back(r); });

  if (cfg.data.path.empty()) {
    const auto docs = tiny_corpus_generate(static_cast<std::uint64_t>(cfg.seed), kTinyDocuments);
    for (const auto& d : docs) packer.add(document_from_text(tok, d));
    data.source = "generated tiny corpus (" + std::to_string(docs.size()) + " documents)";
  } else {
    if (ends_with(cfg.data.path, ".h5") || ends_with(cfg.data.path, ".hdf5"))
      throw ConfigError("data.path '" + cfg.data.path + "': HDF5 token files are not readable by this build",
                        "point data.path at a .txt or .jsonl file; it is tokenized and packed at start");
    RecordReader reader(cfg.data.path, RecordReaderOptions{});
    const ChatFamily family = chat_family_detect(tok);
    while (auto rec = reader.next()) packer.add(record_tokenize(*rec, tok, family));
    data.source = cfg.data.path + " (" + std::to_string(reader.stats().records) + " records)";
  }
  packer.finish();
  data.summary = packer.stats().summary();
  if (rows.size() < 2)
    throw ConfigError("data: only " + std::to_string(rows.size()) + " row(s) of " + std::to_string(pack.seq_len) +
                      " tokens from " + data.source, "give more text or a smaller train.seq_len");
  // Held-out rows: the tail, so the split does not depend on the world size.
  const auto n_val = std::min<std::size_t>(rows.size() - 1,
                                           static_cast<std::size_t>(cfg.data.val_fraction * static_cast<double>(rows.size())));
  data.val.assign(rows.end() - static_cast<std::ptrdiff_t>(n_val), rows.end());
  rows.resize(rows.size() - n_val);
  data.train = std::move(rows);
  return data;
}

long count_loss_tokens(const std::vector<PackedRow>& rows, const std::vector<std::int64_t>& indices) {
  long n = 0;
  for (auto i : indices)
    for (auto t : rows.at(static_cast<std::size_t>(i)).targets) n += t != kIgnoreTarget;
  return n;
}

BatchTensors batch_tensors(const std::vector<PackedRow>& rows, const std::vector<std::int64_t>& indices,
                           const at::Device& device) {
  const auto b = static_cast<std::int64_t>(indices.size());
  const auto T = static_cast<std::int64_t>(rows.at(0).input_ids.size());
  at::Tensor tok = at::empty({b, T}, at::kLong), tgt = at::empty({b, T}, at::kLong), pos = at::empty({b, T}, at::kLong);
  auto* tp = tok.data_ptr<std::int64_t>();
  auto* gp = tgt.data_ptr<std::int64_t>();
  auto* pp = pos.data_ptr<std::int64_t>();
  BatchTensors out;
  for (std::int64_t r = 0; r < b; ++r) {
    const PackedRow& row = rows.at(static_cast<std::size_t>(indices[static_cast<std::size_t>(r)]));
    for (std::int64_t t = 0; t < T; ++t) {
      tp[r * T + t] = row.input_ids[t];
      gp[r * T + t] = row.targets[t];
      pp[r * T + t] = row.position_ids[t];
      out.loss_tokens += row.targets[t] != kIgnoreTarget;
    }
  }
  const bool pin = device.is_cuda();
  out.tokens = (pin ? tok.pin_memory() : tok).to(device, /*non_blocking=*/pin);
  out.targets = (pin ? tgt.pin_memory() : tgt).to(device, pin);
  out.positions = (pin ? pos.pin_memory() : pos).to(device, pin);
  return out;
}

}  // namespace ranktune
