#include "ranktune/train/token_data.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"
#include "ranktune/data/document.h"
#include "ranktune/data/sources.h"
#include "ranktune/data/tiny_corpus.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {
namespace {

// Enough generated documents that the default 200 steps of 8 rows rarely repeat a row.
constexpr std::size_t kTinyDocuments = 2000;

std::vector<PackedRow> tiny_rows(const Config& cfg, const Tokenizer& tok, TokenData& data) {
  std::vector<PackedRow> rows;
  PackOptions pack;
  pack.seq_len = cfg.train.seq_len;
  pack.pad_id = tok.pad_id().value_or(tok.eos_id().value_or(0));
  Packer packer(pack, [&rows](const PackedRow& r) { rows.push_back(r); });
  const auto docs = tiny_corpus_generate(static_cast<std::uint64_t>(cfg.seed), kTinyDocuments);
  for (const auto& d : docs) packer.add(document_from_text(tok, d));
  packer.finish();
  data.source = "generated tiny corpus (" + std::to_string(docs.size()) + " documents)";
  data.summary = packer.stats().summary();
  return rows;
}

// Text/JSONL files, tokenized and packed now, exactly as `ranktune prepare` would store them.
std::vector<PackedRow> text_rows(const Config& cfg, const Tokenizer& tok, TokenData& data) {
  std::vector<PackedRow> rows;
  const SourcesStats st = sources_pack(sources_split(cfg.data.path), tok, sources_options_from(cfg),
                                       [&rows](const PackedRow& r) { rows.push_back(r); });
  data.source = cfg.data.path + " (" + std::to_string(st.records) + " records)";
  data.summary = st.pack.summary();
  if (st.skipped) data.summary += "; " + std::to_string(st.skipped) + " bad records skipped (first: " + st.first_skipped + ")";
  return rows;
}

// A dataset written by `ranktune prepare`: its rows must have this run's length and its tokenizer must be ours.
// All rows are read into memory here (12 bytes per token plus a few vectors per row; see docs/data.md).
std::vector<PackedRow> prepared_rows(const Config& cfg, const Tokenizer& tok, TokenData& data) {
  const std::string& path = cfg.data.path;
  TokenDatasetReader reader(path);
  const TokenDatasetInfo& info = reader.info();
  if (info.seq_len != cfg.train.seq_len)
    throw ConfigError("data.path '" + path + "' holds rows of " + std::to_string(info.seq_len) +
                          " tokens but train.seq_len is " + std::to_string(cfg.train.seq_len),
                      "set --train.seq_len=" + std::to_string(info.seq_len) + ", or run `ranktune prepare` again with "
                      "--train.seq_len=" + std::to_string(cfg.train.seq_len));
  const std::string mine = tokenizer_fingerprint(cfg.data.tokenizer);
  if (info.tokenizer_fingerprint != mine || info.vocab_size != tok.vocab_size())
    throw ConfigError("data.path '" + path + "' was tokenized with '" + info.tokenizer + "' (" +
                          info.tokenizer_fingerprint + ", vocabulary " + std::to_string(info.vocab_size) +
                          ") but data.tokenizer is '" + cfg.data.tokenizer + "' (" + mine + ", vocabulary " +
                          std::to_string(tok.vocab_size()) + ")",
                      "set --data.tokenizer=" + info.tokenizer + " (or a copy of that file), or run `ranktune "
                      "prepare` again with this tokenizer");
  data.source = path + " (prepared from " + std::to_string(info.sources.size()) + " file(s), " +
                std::to_string(info.records) + " records)";
  data.summary = info.pack.summary();
  if (info.skipped_records) data.summary += "; " + std::to_string(info.skipped_records) + " bad records skipped at prepare";
  return reader.read(0, info.rows);
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
  std::vector<PackedRow> rows = cfg.data.path.empty()                                  ? tiny_rows(cfg, tok, data)
                                : TokenDatasetReader::is_dataset_path(cfg.data.path) ? prepared_rows(cfg, tok, data)
                                                                                      : text_rows(cfg, tok, data);
  if (rows.size() < 2)
    throw ConfigError("data: only " + std::to_string(rows.size()) + " row(s) of " + std::to_string(cfg.train.seq_len) +
                      " tokens from " + data.source, "give more text or a smaller train.seq_len");
  // Held-out rows: the tail, so the split does not depend on the world size (nor on whether the rows were prepared).
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
