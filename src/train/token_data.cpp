#include "ranktune/train/token_data.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"
#include "ranktune/data/document.h"
#include "ranktune/data/sources.h"
#include "ranktune/data/tiny_corpus.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {
namespace {

// For the log's data line: what a packed document attends to.
std::string attention_note(PackingAttention a) {
  if (a == PackingAttention::isolated)
    return "; packed documents attend only to themselves (data.packing_attention=isolated)";
  return "; packed documents attend to the earlier ones in their row (data.packing_attention=shared)";
}

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
  if (st.skipped)
    data.summary += "; " + std::to_string(st.skipped) + " bad records skipped (first: " + st.first_skipped + ")";
  return rows;
}

// A dataset written by `ranktune prepare`: its rows must have this run's length and its tokenizer must be ours.
// Only the attributes are read here; rows are read when a batch needs them (RowStore).
std::shared_ptr<const TokenDatasetReader> prepared_open(const Config& cfg, const Tokenizer& tok, TokenData& data,
                                                        bool verified) {
  const std::string& path = cfg.data.path;
  auto reader = std::make_shared<const TokenDatasetReader>(path, /*read_through=*/!verified);
  const TokenDatasetInfo& info = reader->info();
  if (info.seq_len != cfg.train.seq_len)
    throw ConfigError("data.path '" + path + "' holds rows of " + std::to_string(info.seq_len) +
                          " tokens but train.seq_len is " + std::to_string(cfg.train.seq_len),
                      "set --train.seq_len=" + std::to_string(info.seq_len) +
                          ", or run `ranktune prepare` again with "
                          "--train.seq_len=" +
                          std::to_string(cfg.train.seq_len));
  const std::string spec = config_tokenizer(cfg);
  const std::string mine = tokenizer_fingerprint(spec);
  if (info.tokenizer_fingerprint != mine || info.vocab_size != tok.vocab_size())
    throw ConfigError("data.path '" + path + "' was tokenized with '" + info.tokenizer + "' (" +
                          info.tokenizer_fingerprint + ", vocabulary " + std::to_string(info.vocab_size) +
                          ") but data.tokenizer is '" + spec + "' (" + mine + ", vocabulary " +
                          std::to_string(tok.vocab_size()) + ")",
                      "set --data.tokenizer=" + info.tokenizer +
                          " (or a copy of that file), or run `ranktune "
                          "prepare` again with this tokenizer");
  data.source = path + " (prepared from " + std::to_string(info.sources.size()) + " file(s), " +
                std::to_string(info.records) + " records)";
  data.summary = info.pack.summary();
  if (info.skipped_records)
    data.summary += "; " + std::to_string(info.skipped_records) + " bad records skipped at prepare";
  return reader;
}

// Held-out rows: the tail, so the split does not depend on the world size (nor on whether the rows were prepared).
std::int64_t held_out_rows(const Config& cfg, std::int64_t rows, const std::string& source) {
  if (rows < 2)
    throw ConfigError("data: only " + std::to_string(rows) + " row(s) of " + std::to_string(cfg.train.seq_len) +
                          " tokens from " + source,
                      "give more text or a smaller train.seq_len");
  return std::min<std::int64_t>(rows - 1, static_cast<std::int64_t>(cfg.data.val_fraction * static_cast<double>(rows)));
}

}  // namespace

TokenData token_data_load(const Config& cfg, std::unique_ptr<Tokenizer> tokenizer, bool verified) {
  TokenData data;
  try {
    data.tokenizer = tokenizer ? std::move(tokenizer) : tokenizer_load(config_tokenizer(cfg));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError("data.tokenizer '" + config_tokenizer(cfg) + "': " + e.what());
  }
  const Tokenizer& tok = *data.tokenizer;
  data.packing_attention = packing_attention_parse(cfg.data.packing_attention);
  if (!cfg.data.path.empty() && TokenDatasetReader::is_dataset_path(cfg.data.path)) {
    auto reader = prepared_open(cfg, tok, data, verified);
    const std::int64_t rows = reader->info().rows, n_val = held_out_rows(cfg, rows, data.source);
    data.train = RowStore(reader, 0, rows - n_val);
    data.val = RowStore(reader, rows - n_val, n_val);
    data.summary += attention_note(data.packing_attention);
    return data;
  }
  std::vector<PackedRow> rows = cfg.data.path.empty() ? tiny_rows(cfg, tok, data) : text_rows(cfg, tok, data);
  const auto n_val = static_cast<std::size_t>(held_out_rows(cfg, static_cast<std::int64_t>(rows.size()), data.source));
  data.val = RowStore(std::vector<PackedRow>(rows.end() - static_cast<std::ptrdiff_t>(n_val), rows.end()));
  rows.resize(rows.size() - n_val);
  data.train = RowStore(std::move(rows));
  data.summary += attention_note(data.packing_attention);
  return data;
}

long count_loss_tokens(const RowStore& rows, const std::vector<std::int64_t>& indices) {
  long n = 0;
  for (const PackedRow& row : rows.rows(indices))
    for (auto t : row.targets) n += t != kIgnoreTarget;
  return n;
}

BatchTensors batch_tensors(const RowStore& store, const std::vector<std::int64_t>& indices, const at::Device& device,
                           PackingAttention attention) {
  const std::vector<PackedRow> rows = store.rows(indices);
  const auto b = static_cast<std::int64_t>(indices.size());
  const auto T = static_cast<std::int64_t>(rows.at(0).input_ids.size());
  at::Tensor tok = at::empty({b, T}, at::kLong), tgt = at::empty({b, T}, at::kLong), pos = at::empty({b, T}, at::kLong),
             doc = at::empty({b, T}, at::kLong);
  auto* tp = tok.data_ptr<std::int64_t>();
  auto* gp = tgt.data_ptr<std::int64_t>();
  auto* pp = pos.data_ptr<std::int64_t>();
  auto* dp = doc.data_ptr<std::int64_t>();
  BatchTensors out;
  // Under causal attention a row's first document never sees another one, and what a later document sees only
  // matters where it has a target: a row of one document (padding after it included) needs no mask.
  bool mixed = false;
  for (std::int64_t r = 0; r < b; ++r) {
    const PackedRow& row = rows[static_cast<std::size_t>(r)];
    const std::vector<std::int32_t> docs = row_documents(row.position_ids);
    for (std::int64_t t = 0; t < T; ++t) {
      tp[r * T + t] = row.input_ids[t];
      gp[r * T + t] = row.targets[t];
      pp[r * T + t] = row.position_ids[t];
      dp[r * T + t] = docs[t];
      out.loss_tokens += row.targets[t] != kIgnoreTarget;
      mixed = mixed || (docs[t] > 0 && row.targets[t] != kIgnoreTarget);
    }
  }
  const bool pin = device.is_cuda();
  out.tokens = (pin ? tok.pin_memory() : tok).to(device, /*non_blocking=*/pin);
  out.targets = (pin ? tgt.pin_memory() : tgt).to(device, pin);
  out.positions = (pin ? pos.pin_memory() : pos).to(device, pin);
  if (attention == PackingAttention::isolated && mixed) out.documents = pin ? doc.pin_memory() : doc;
  return out;
}

}  // namespace ranktune
