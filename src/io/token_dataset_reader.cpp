// Opens a prepared token dataset (one file or a shard directory): every file must be a regular file and pass its
// checksum before HDF5 opens it; then every shard must belong to the same dataset and hold the rows its attributes
// announce. Reads rows by global index.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "ranktune/core/log.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/sources.h"
#include "ranktune/io/h5_rows.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRebuildHint = "re-create it with `ranktune prepare`, or point --data.path at the source text";

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < s.size()) {
    const auto nl = s.find('\n', start);
    out.push_back(s.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return out;
}

TokenDatasetInfo read_info(hid_t root) {
  using namespace h5;
  TokenDatasetInfo info;
  info.tokenizer = attr_read_string(root, "tokenizer");
  info.tokenizer_fingerprint = attr_read_string(root, "tokenizer_fingerprint");
  info.vocab_size = attr_read_int(root, "vocab_size");
  info.seq_len = attr_read_int(root, "seq_len");
  info.pad_id = attr_read_int(root, "pad_id");
  info.packing = attr_read_string(root, "packing");
  info.overlong = attr_read_string(root, "overlong");
  info.chat_template = attr_read_string(root, "chat_template");
  info.sources = lines_of(attr_read_string(root, "sources"));
  info.rows = attr_read_int(root, "rows");
  info.records = attr_read_int(root, "records");
  info.skipped_records = attr_read_int(root, "skipped_records");
  PackStats& p = info.pack;
  p.documents = attr_read_int(root, "documents");
  p.empty_documents = attr_read_int(root, "empty_documents");
  p.untrained_documents = attr_read_int(root, "untrained_documents");
  p.tokens = attr_read_int(root, "tokens");
  p.pad_tokens = attr_read_int(root, "pad_tokens");
  p.target_tokens = attr_read_int(root, "loss_tokens");
  p.truncated_documents = attr_read_int(root, "truncated_documents");
  p.truncated_tokens = attr_read_int(root, "truncated_tokens");
  p.split_documents = attr_read_int(root, "split_documents");
  p.split_pieces = attr_read_int(root, "split_pieces");
  p.rows = info.rows;
  return info;
}

std::vector<std::string> shard_files(const std::string& dir) {
  static const std::regex pattern("shard-[0-9]{5}\\.h5");
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (std::regex_match(e.path().filename().string(), pattern)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  if (out.empty()) throw DataError("data.path '" + dir + "' is a directory without shard-NNNNN.h5 files", kRebuildHint);
  for (std::size_t i = 0; i < out.size(); ++i) {
    char want[32];
    std::snprintf(want, sizeof want, "shard-%05zu.h5", i);
    if (fs::path(out[i]).filename() != want)
      throw DataError("token dataset '" + dir + "' lacks " + want + " (the next file is " +
                          fs::path(out[i]).filename().string() + ")",
                      kRebuildHint);
  }
  return out;
}

}  // namespace

struct TokenDatasetReader::Impl {
  struct Shard {
    std::string path;
    h5::File file;
    h5::Dataset tokens, targets, positions;
    std::int64_t first = 0, rows = 0;
  };
  std::vector<Shard> shards;
  TokenDatasetInfo info;
  int unchecked = 0;  // files without a checksum (an earlier ranktune's)

  // Verifies one shard's checksum, opens it and checks it against the dataset (the first shard defines it).
  void open(const std::string& path, std::int64_t index, std::int64_t count, bool read_through) {
    if (token_dataset_verify(path, read_through) == TokenDatasetChecksum::absent) ++unchecked;
    Shard s;
    s.path = path;
    try {
      s.file = h5::file_open(path, h5::FileLocking::best_effort);
      const hid_t root = s.file.get();
      if (!h5::attr_exists(root, "format") || h5::attr_read_string(root, "format") != kTokenDatasetFormat)
        throw DataError("not a ranktune token dataset (no format = \"" + std::string(kTokenDatasetFormat) +
                        "\" attribute)");
      const auto version = h5::attr_read_int(root, "format_version");
      if (version > kTokenDatasetVersion)
        throw DataError("format version " + std::to_string(version) + " is newer than this build reads (" +
                        std::to_string(kTokenDatasetVersion) + ")");
      TokenDatasetInfo mine = read_info(root);
      if (index == 0) info = mine;
      const auto shard_count = h5::attr_read_int(root, "shard_count");
      if (h5::attr_read_int(root, "shard_index") != index || shard_count != count)
        throw DataError("is shard " + std::to_string(h5::attr_read_int(root, "shard_index")) + " of " +
                        std::to_string(shard_count) + ", expected shard " + std::to_string(index) + " of " +
                        std::to_string(count) + " (a shard is missing or left over from another run)");
      if (mine.seq_len != info.seq_len || mine.rows != info.rows ||
          mine.tokenizer_fingerprint != info.tokenizer_fingerprint)
        throw DataError("belongs to another dataset than shard 0 (row length, row count or tokenizer differ)");
      s.first = h5::attr_read_int(root, "shard_first_row");
      s.rows = h5::attr_read_int(root, "shard_rows");
      const std::int64_t expected_first = shards.empty() ? 0 : shards.back().first + shards.back().rows;
      if (s.first != expected_first)
        throw DataError("starts at row " + std::to_string(s.first) + ", expected " + std::to_string(expected_first));
      std::int64_t rows = 0, width = 0;
      const std::pair<const char*, h5::Dataset*> datasets[] = {{"tokens", &s.tokens},
                                                               {"targets", &s.targets},
                                                               {"positions", &s.positions}};
      for (const auto& [name, ds] : datasets) {
        *ds = h5::rows_open(root, name, rows, width);
        if (rows != s.rows || width != info.seq_len)
          throw DataError(std::string("dataset '") + name + "' is [" + std::to_string(rows) + ", " +
                          std::to_string(width) + "], expected [" + std::to_string(s.rows) + ", " +
                          std::to_string(info.seq_len) + "]");
      }
    } catch (const std::exception& e) {
      throw DataError("token dataset '" + path + "': " + e.what(), kRebuildHint);
    }
    shards.push_back(std::move(s));
  }
};

bool TokenDatasetReader::is_dataset_path(const std::string& path) {
  const auto ext = fs::path(path).extension();
  return ext == ".h5" || ext == ".hdf5" || fs::is_directory(path);
}

namespace {

std::vector<std::string> dataset_files(const std::string& path) {
  if (!fs::exists(path)) throw DataError("data.path '" + path + "' does not exist");
  const std::vector<std::string> files = fs::is_directory(path) ? shard_files(path) : std::vector{path};
  require_regular_files(files);  // a FIFO named *.h5 would block the checksum's first read
  return files;
}

}  // namespace

void token_dataset_verify_files(const std::string& path, ChecksumShare share) {
  const std::vector<std::string> files = dataset_files(path);
  for (std::size_t i = 0; i < files.size(); ++i)
    token_dataset_verify(files[i], /*read_through=*/share.mine(static_cast<std::int64_t>(i)));
}

TokenDatasetReader::TokenDatasetReader(const std::string& path, bool read_through) : impl_(std::make_unique<Impl>()) {
  const std::vector<std::string> files = dataset_files(path);
  const auto count = static_cast<std::int64_t>(files.size());
  for (std::int64_t i = 0; i < count; ++i) impl_->open(files[static_cast<std::size_t>(i)], i, count, read_through);
  if (impl_->unchecked > 0)
    log0() << "note: token dataset '" << path << "': " << impl_->unchecked << " of " << count
           << " file(s) have no checksum (prepared by an earlier ranktune), so damage to their HDF5 metadata is not "
              "detected before it is read; re-run `ranktune prepare` to add one";
  const auto& last = impl_->shards.back();
  if (last.first + last.rows != impl_->info.rows)
    throw DataError("token dataset '" + path + "': its shards hold " + std::to_string(last.first + last.rows) +
                        " rows, its attributes say " + std::to_string(impl_->info.rows),
                    kRebuildHint);
}

TokenDatasetReader::~TokenDatasetReader() = default;
TokenDatasetReader::TokenDatasetReader(TokenDatasetReader&&) noexcept = default;

const TokenDatasetInfo& TokenDatasetReader::info() const { return impl_->info; }
bool TokenDatasetReader::checksummed() const { return impl_->unchecked == 0; }

std::vector<PackedRow> TokenDatasetReader::read(std::int64_t begin, std::int64_t n) const {
  const std::int64_t T = impl_->info.seq_len, end = begin + n;
  if (begin < 0 || n < 0 || end > impl_->info.rows)
    throw DataError("rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") are outside the dataset's " +
                    std::to_string(impl_->info.rows));
  std::vector<PackedRow> out;
  out.reserve(static_cast<std::size_t>(n));
  std::vector<std::int32_t> tok, tgt, pos;
  for (const auto& s : impl_->shards) {
    const std::int64_t lo = std::max(begin, s.first), hi = std::min(end, s.first + s.rows);
    if (lo >= hi) continue;
    const auto count = static_cast<std::size_t>((hi - lo) * T);
    tok.resize(count);
    tgt.resize(count);
    pos.resize(count);
    try {
      h5::rows_read(s.tokens.get(), lo - s.first, hi - lo, tok.data());
      h5::rows_read(s.targets.get(), lo - s.first, hi - lo, tgt.data());
      h5::rows_read(s.positions.get(), lo - s.first, hi - lo, pos.data());
    } catch (const std::exception& e) {
      throw DataError("token dataset '" + s.path + "': cannot read rows: " + e.what(), kRebuildHint);
    }
    for (std::int64_t r = 0; r < hi - lo; ++r) {
      const auto a = tok.begin() + r * T, b = a + T;
      PackedRow row;
      row.input_ids.assign(a, b);
      row.targets.assign(tgt.begin() + r * T, tgt.begin() + (r + 1) * T);
      row.position_ids.assign(pos.begin() + r * T, pos.begin() + (r + 1) * T);
      out.push_back(std::move(row));
    }
  }
  return out;
}

}  // namespace ranktune
