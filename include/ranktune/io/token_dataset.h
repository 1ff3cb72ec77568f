// defines: the prepared token dataset (docs/data.md, "Prepared datasets"): TokenDatasetInfo (the root attributes),
// TokenDatasetWriter (rows -> OUT.h5, or OUT/shard-00000.h5... of at most shard_rows rows, committed by temp +
// fsync + rename), TokenDatasetReader (a file or a shard directory; rows by global index, read by hyperslab) and the
// whole-file checksum each file carries in its HDF5 user block, checked before HDF5 parses the file.
// No LibTorch here: rows are PackedRow; token_data.cpp turns them into tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ranktune/data/packer.h"

namespace ranktune {

constexpr const char* kTokenDatasetFormat = "ranktune-tokens";
constexpr std::int64_t kTokenDatasetVersion = 1;

// Every file begins with a user block of this size (HDF5 and h5py skip it) holding a checksum header: magic
// "ranktune-tokens\n", header version, user block size, file size, and the CRC32C of the whole file read with the
// CRC field as zeros (docs/data.md). HDF5 can crash or hang instead of failing on one flipped bit of its metadata
// (a variable-length string read from a damaged global heap), so no HDF5 call sees a file before its checksum passes.
constexpr std::size_t kTokenDatasetUserBlock = 512;

// absent: HDF5 from byte 0 and no header, a file prepared before the checksum existed; read without one.
enum class TokenDatasetChecksum { verified, header_only, absent };
// Checks one file with plain reads, no HDF5. Throws DataError naming the file when it is not a regular file, starts
// with neither the header nor the HDF5 signature, or its size or CRC32C differs from the header's. With
// `read_through` false the header and the size are checked but the file is not read through for its CRC
// (header_only): the ranks of a node share that work (ChecksumShare).
TokenDatasetChecksum token_dataset_verify(const std::string& file, bool read_through = true);

// Which files of a dataset this rank reads through for their CRC32C: file i when i % count == index. The ranks of
// one node take index = local rank, count = local size, so each file is read once per node, not once per rank.
struct ChecksumShare {
  int index = 0;
  int count = 1;
  bool mine(std::int64_t file) const { return file % count == index; }
};

// Every file of a dataset (a file or a shard directory): the header and size of each, the CRC32C of this rank's
// share. Run under agree_run, and completed on every rank, before any rank opens the files with HDF5 (which can crash
// on damaged metadata): then readers can be opened with read_through = false.
void token_dataset_verify_files(const std::string& path, ChecksumShare share);
// Fills the user block of a closed file created with an empty one (h5::file_create's userblock) with the header.
void token_dataset_seal(const std::string& file);

struct TokenDatasetInfo {
  std::string tokenizer;              // data.tokenizer as given at prepare time ("byte" or a path)
  std::string tokenizer_fingerprint;  // tokenizer_fingerprint(): what train compares
  std::int64_t vocab_size = 0;
  std::int64_t seq_len = 0;  // row length T
  std::int64_t pad_id = 0;
  std::string packing = "documents";  // "documents" (a document never starts mid-way in a row unless split) | "fill"
  std::string overlong = "split";     // truncate | split
  std::string chat_template;          // family used for messages records
  std::vector<std::string> sources;   // input files, in order
  std::int64_t rows = 0;              // in the whole dataset (all shards)
  std::int64_t records = 0;
  std::int64_t skipped_records = 0;
  PackStats pack;  // documents, tokens, loss (target) tokens, truncated/split counts
};

class TokenDatasetWriter {
 public:
  // shard_rows = 0: one file at `path`; > 0: a directory `path` of shard files. Nothing is visible at `path`
  // before commit(). Throws DataError if `path` is an existing directory (shards are never mixed).
  TokenDatasetWriter(std::string path, std::int64_t seq_len, std::int64_t shard_rows);
  ~TokenDatasetWriter();  // without commit(): the temporary file or directory is removed
  TokenDatasetWriter(const TokenDatasetWriter&) = delete;
  TokenDatasetWriter& operator=(const TokenDatasetWriter&) = delete;

  void add(const PackedRow& row);
  // Writes `info` (rows set to the count added) as root attributes of every file, then commits.
  void commit(TokenDatasetInfo info);
  std::int64_t rows() const;
  int shards() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class TokenDatasetReader {
 public:
  // A file, or a directory of shard-NNNNN.h5 files. Every file is checked by token_dataset_verify before HDF5
  // opens it (about 3 GB/s from the page cache); `read_through` false checks only headers and sizes, for files that
  // token_dataset_verify_files has already verified on every rank's behalf. Throws DataError naming the file that is
  // not a regular file, is damaged, is not a token dataset, or disagrees with the first shard. Files without a
  // checksum (an earlier ranktune's) are read, with a note.
  explicit TokenDatasetReader(const std::string& path, bool read_through = true);
  ~TokenDatasetReader();
  TokenDatasetReader(TokenDatasetReader&&) noexcept;

  const TokenDatasetInfo& info() const;
  // False when a file of the dataset has no checksum (TokenDatasetChecksum::absent).
  bool checksummed() const;
  // Rows [begin, begin + n) of the whole dataset (shards concatenated in order), one hyperslab read per shard.
  std::vector<PackedRow> read(std::int64_t begin, std::int64_t n) const;

  // A path `data.path` treats as prepared: ending in .h5 / .hdf5, or a directory.
  static bool is_dataset_path(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ranktune
