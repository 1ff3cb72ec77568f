// Writes a prepared token dataset: rows buffered a chunk at a time and appended by hyperslab; the totals known only
// at the end are written as root attributes of every file, then each closed file gets its checksum header, before
// the temp file (or directory) is renamed into place.
#include <cstdio>
#include <filesystem>

#include "ranktune/data/data_error.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/io/h5_rows.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

// Small chunks (64 KiB of one dataset) so that reading a batch of rows touches little more than those rows.
constexpr std::int64_t kChunkBytes = 64 * 1024;

std::string shard_name(int index) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%05d.h5", index);
  return name;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : "\n") + s;
  return out;
}

void write_info(hid_t root, const TokenDatasetInfo& info) {
  using namespace h5;
  attr_write_string(root, "format", kTokenDatasetFormat);
  attr_write_int(root, "format_version", kTokenDatasetVersion);
  attr_write_string(root, "tokenizer", info.tokenizer);
  attr_write_string(root, "tokenizer_fingerprint", info.tokenizer_fingerprint);
  attr_write_int(root, "vocab_size", info.vocab_size);
  attr_write_int(root, "seq_len", info.seq_len);
  attr_write_int(root, "pad_id", info.pad_id);
  attr_write_string(root, "packing", info.packing);
  attr_write_string(root, "overlong", info.overlong);
  attr_write_string(root, "document_boundaries", "position_reset");
  attr_write_string(root, "chat_template", info.chat_template);
  attr_write_string(root, "sources", joined(info.sources));
  attr_write_int(root, "rows", info.rows);
  attr_write_int(root, "records", info.records);
  attr_write_int(root, "skipped_records", info.skipped_records);
  const PackStats& p = info.pack;
  attr_write_int(root, "documents", p.documents);
  attr_write_int(root, "empty_documents", p.empty_documents);
  attr_write_int(root, "untrained_documents", p.untrained_documents);
  attr_write_int(root, "tokens", p.tokens);
  attr_write_int(root, "pad_tokens", p.pad_tokens);
  attr_write_int(root, "loss_tokens", p.target_tokens);
  attr_write_int(root, "truncated_documents", p.truncated_documents);
  attr_write_int(root, "truncated_tokens", p.truncated_tokens);
  attr_write_int(root, "split_documents", p.split_documents);
  attr_write_int(root, "split_pieces", p.split_pieces);
}

}  // namespace

struct TokenDatasetWriter::Impl {
  std::string path;
  std::int64_t seq_len;
  std::int64_t shard_rows;  // 0 = one file
  std::int64_t chunk_rows;
  fs::path tmp;  // the temp file, or the temp directory of shards
  std::vector<fs::path> files;
  std::vector<std::int64_t> file_rows;
  h5::File file;
  h5::Dataset tokens, targets, positions;
  std::vector<std::int32_t> buf_tokens, buf_targets, buf_positions;
  std::int64_t rows = 0;
  bool committed = false;

  void flush() {
    const auto n = static_cast<std::int64_t>(buf_tokens.size()) / seq_len;
    h5::rows_append(tokens.get(), buf_tokens.data(), n);
    h5::rows_append(targets.get(), buf_targets.data(), n);
    h5::rows_append(positions.get(), buf_positions.data(), n);
    buf_tokens.clear();
    buf_targets.clear();
    buf_positions.clear();
  }

  void close_file() {
    if (!file) return;
    flush();
    tokens.reset();
    targets.reset();
    positions.reset();
    h5::file_close(file);
  }

  void open_next() {
    close_file();
    const fs::path next = shard_rows > 0 ? tmp / shard_name(static_cast<int>(files.size())) : tmp;
    file = h5::file_create(next.string(), h5::FileLocking::best_effort, kTokenDatasetUserBlock);
    tokens = h5::rows_create(file.get(), "tokens", seq_len, chunk_rows);
    targets = h5::rows_create(file.get(), "targets", seq_len, chunk_rows);
    positions = h5::rows_create(file.get(), "positions", seq_len, chunk_rows);
    files.push_back(next);
    file_rows.push_back(0);
  }
};

TokenDatasetWriter::TokenDatasetWriter(std::string path, std::int64_t seq_len, std::int64_t shard_rows)
    : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  w.path = std::move(path);
  w.seq_len = seq_len;
  w.shard_rows = shard_rows;
  w.chunk_rows = std::max<std::int64_t>(1, kChunkBytes / (4 * std::max<std::int64_t>(1, seq_len)));
  if (shard_rows > 0) w.chunk_rows = std::min(w.chunk_rows, shard_rows);
  if (seq_len < 2) throw DataError("token dataset rows must hold at least 2 tokens, got " + std::to_string(seq_len));
  const fs::path parent = fs::path(w.path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    throw DataError("output '" + w.path + "': directory '" + parent.string() + "' does not exist",
                    "create it first, or choose another --prepare.output");
  if (fs::is_directory(w.path) || (shard_rows > 0 && fs::exists(w.path)))
    throw DataError("output '" + w.path + "' already exists", "remove it, or choose another --prepare.output");
  w.tmp = w.path + tmp_suffix();
  remove_tree(w.tmp);  // a leftover of a killed run of the same job
  if (shard_rows > 0) fs::create_directories(w.tmp);
  w.open_next();
}

TokenDatasetWriter::~TokenDatasetWriter() {
  if (!impl_ || impl_->committed) return;
  try {
    impl_->tokens.reset();
    impl_->targets.reset();
    impl_->positions.reset();
    impl_->file.reset();
    remove_tree(impl_->tmp);
  } catch (const std::exception&) {  // a destructor cannot report; the temp name says what it is
  }
}

void TokenDatasetWriter::add(const PackedRow& row) {
  Impl& w = *impl_;
  const auto T = static_cast<std::size_t>(w.seq_len);
  if (row.input_ids.size() != T || row.targets.size() != T || row.position_ids.size() != T)
    throw DataError("a packed row has " + std::to_string(row.input_ids.size()) + " tokens, the dataset's rows " +
                    std::to_string(w.seq_len));
  if (w.shard_rows > 0 && w.file_rows.back() == w.shard_rows) w.open_next();
  w.buf_tokens.insert(w.buf_tokens.end(), row.input_ids.begin(), row.input_ids.end());
  w.buf_targets.insert(w.buf_targets.end(), row.targets.begin(), row.targets.end());
  w.buf_positions.insert(w.buf_positions.end(), row.position_ids.begin(), row.position_ids.end());
  ++w.file_rows.back();
  ++w.rows;
  if (static_cast<std::int64_t>(w.buf_tokens.size()) == w.chunk_rows * w.seq_len) w.flush();
}

void TokenDatasetWriter::commit(TokenDatasetInfo info) {
  Impl& w = *impl_;
  w.close_file();
  info.rows = w.rows;
  info.seq_len = w.seq_len;
  std::int64_t first = 0;
  for (std::size_t i = 0; i < w.files.size(); ++i) {
    h5::File f = h5::file_open_rw(w.files[i].string(), h5::FileLocking::best_effort);
    write_info(f.get(), info);
    h5::attr_write_int(f.get(), "shard_index", static_cast<std::int64_t>(i));
    h5::attr_write_int(f.get(), "shard_count", static_cast<std::int64_t>(w.files.size()));
    h5::attr_write_int(f.get(), "shard_first_row", first);
    h5::attr_write_int(f.get(), "shard_rows", w.file_rows[i]);
    for (const char* name : {"tokens", "targets", "positions"}) {
      h5::Dataset ds(RANKTUNE_H5_ID(H5Dopen2(f.get(), name, H5P_DEFAULT)));
      h5::rows_seal(ds.get());
    }
    h5::file_close(f);
    token_dataset_seal(w.files[i].string());  // after the last HDF5 write: the checksum covers the final bytes
    first += w.file_rows[i];
    if (w.shard_rows > 0) fsync_file(w.files[i]);
  }
  if (w.shard_rows > 0) fsync_dir(w.tmp);
  file_commit(w.tmp, w.path);  // a directory renames like a file; its entries were synced above
  w.committed = true;
}

std::int64_t TokenDatasetWriter::rows() const { return impl_->rows; }
int TokenDatasetWriter::shards() const { return static_cast<int>(impl_->files.size()); }

}  // namespace ranktune
