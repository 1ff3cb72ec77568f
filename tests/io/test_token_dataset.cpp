// Prepared token datasets: writer -> reader round trip (rows and attributes), shards concatenated in order and read
// across shard boundaries, a missing shard / foreign file / garbage file / flipped byte refused naming the file, and
// nothing visible at the output until commit. The whole-file checksum: written by the writer, and every bit of a
// file flipped in turn over its header and HDF5 metadata is refused before HDF5 opens the file; files of the earlier
// format (no user block) are still read; a FIFO is refused without blocking.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ranktune/data/data_error.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/h5.h"
#include "ranktune/io/row_store.h"
#include "ranktune/io/token_dataset.h"
#include "support/scratch_dir.h"

namespace fs = std::filesystem;
using testing::HasSubstr;

namespace ranktune {
namespace {

class TokenDatasetTest : public testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_ / name; }

  // n distinct rows of length T: every value encodes (row, column, which array).
  static std::vector<PackedRow> make_rows(int n, int T) {
    std::vector<PackedRow> rows(static_cast<std::size_t>(n));
    for (int r = 0; r < n; ++r)
      for (int t = 0; t < T; ++t) {
        rows[r].input_ids.push_back(r * 1000 + t);
        rows[r].targets.push_back(t % 3 == 0 ? kIgnoreTarget : r * 1000 + t + 1);
        rows[r].position_ids.push_back(t % 5);
      }
    return rows;
  }

  static TokenDatasetInfo make_info() {
    TokenDatasetInfo info;
    info.tokenizer = "byte";
    info.tokenizer_fingerprint = "byte";
    info.vocab_size = 259;
    info.pad_id = 258;
    info.overlong = "truncate";
    info.chat_template = "plain";
    info.sources = {"a.jsonl", "b.txt"};
    info.records = 12;
    info.skipped_records = 2;
    info.pack.documents = 11;
    info.pack.tokens = 300;
    info.pack.target_tokens = 250;
    info.pack.truncated_documents = 3;
    info.pack.split_documents = 0;
    return info;
  }

  void write(const std::string& out, const std::vector<PackedRow>& rows, int T, std::int64_t shard_rows) {
    TokenDatasetWriter w(out, T, shard_rows);
    for (const auto& r : rows) w.add(r);
    w.commit(make_info());
  }

  test::ScratchDir dir_{"tokds_" + test::test_name()};
};

std::vector<char> bytes_of(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& file, const std::vector<char>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void flip_bit(const std::string& file, std::uint64_t offset, int bit) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ (1 << bit));
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&c, 1);
}

void expect_rows_equal(const std::vector<PackedRow>& got, const std::vector<PackedRow>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].input_ids, want[i].input_ids) << "row " << i;
    EXPECT_EQ(got[i].targets, want[i].targets) << "row " << i;
    EXPECT_EQ(got[i].position_ids, want[i].position_ids) << "row " << i;
  }
}

TEST_F(TokenDatasetTest, OneFileRoundTripsRowsAndAttributes) {
  const auto rows = make_rows(37, 16);
  const std::string out = path("d.h5");
  write(out, rows, 16, 0);
  EXPECT_TRUE(fs::is_regular_file(out));
  TokenDatasetReader reader(out);
  const TokenDatasetInfo& info = reader.info();
  EXPECT_EQ(info.rows, 37);
  EXPECT_EQ(info.seq_len, 16);
  EXPECT_EQ(info.vocab_size, 259);
  EXPECT_EQ(info.pad_id, 258);
  EXPECT_EQ(info.tokenizer_fingerprint, "byte");
  EXPECT_EQ(info.overlong, "truncate");
  EXPECT_EQ(info.chat_template, "plain");
  EXPECT_EQ(info.sources, (std::vector<std::string>{"a.jsonl", "b.txt"}));
  EXPECT_EQ(info.records, 12);
  EXPECT_EQ(info.skipped_records, 2);
  EXPECT_EQ(info.pack.target_tokens, 250);
  EXPECT_EQ(info.pack.truncated_documents, 3);
  expect_rows_equal(reader.read(0, 37), rows);
  expect_rows_equal(reader.read(5, 2), {rows[5], rows[6]});

  // What h5py users see: chunked, Fletcher32, int32 with dtype/shape attributes.
  h5::File f = h5::file_open(out, h5::FileLocking::best_effort);
  const h5::TensorInfo ti = h5::tensor_info(f.get(), "targets");
  EXPECT_EQ(ti.dtype, "int32");
  EXPECT_EQ(ti.shape, (std::vector<std::int64_t>{37, 16}));
  EXPECT_TRUE(ti.chunked);
  EXPECT_TRUE(ti.fletcher32);
  EXPECT_EQ(h5::attr_read_string(f.get(), "format"), kTokenDatasetFormat);
  EXPECT_EQ(h5::attr_read_string(f.get(), "document_boundaries"), "position_reset");
}

TEST_F(TokenDatasetTest, ShardsConcatenateInOrder) {
  const auto rows = make_rows(10, 8);
  const std::string out = path("shards");
  write(out, rows, 8, 3);
  for (const char* name : {"shard-00000.h5", "shard-00001.h5", "shard-00002.h5", "shard-00003.h5"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / name)) << name;
  EXPECT_FALSE(fs::exists(fs::path(out) / "shard-00004.h5"));
  TokenDatasetReader reader(out);
  EXPECT_EQ(reader.info().rows, 10);
  expect_rows_equal(reader.read(0, 10), rows);
  expect_rows_equal(reader.read(2, 6), std::vector<PackedRow>(rows.begin() + 2, rows.begin() + 8));  // 3 shards
  EXPECT_THROW(reader.read(8, 3), DataError);
}

TEST_F(TokenDatasetTest, RowStoreOverARangeEqualsRowsInMemory) {
  const auto rows = make_rows(12, 8);
  const std::string out = path("store");
  write(out, rows, 8, 5);
  auto reader = std::make_shared<const TokenDatasetReader>(out);
  const RowStore lazy(reader, 4, 6);  // rows 4..9, across shards 0, 1
  const RowStore memory(std::vector<PackedRow>(rows.begin() + 4, rows.begin() + 10));
  EXPECT_EQ(lazy.size(), 6u);
  const std::vector<std::int64_t> order = {5, 0, 3, 3, 1};
  expect_rows_equal(lazy.rows(order), memory.rows(order));
  EXPECT_THROW(lazy.row(6), DataError);
  EXPECT_TRUE(RowStore().empty());
}

TEST_F(TokenDatasetTest, ShardRowsMultipleOfTotalMakesNoEmptyShard) {
  const std::string out = path("even");
  write(out, make_rows(6, 4), 4, 3);
  EXPECT_TRUE(fs::exists(fs::path(out) / "shard-00001.h5"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "shard-00002.h5"));
  EXPECT_EQ(TokenDatasetReader(out).info().rows, 6);
}

TEST_F(TokenDatasetTest, MissingShardIsRefusedNamingTheFile) {
  const std::string out = path("gap");
  write(out, make_rows(10, 8), 8, 3);
  fs::remove(fs::path(out) / "shard-00001.h5");
  try {
    TokenDatasetReader reader(out);
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("lacks shard-00001.h5"));
  }
  fs::remove(fs::path(out) / "shard-00003.h5");  // now the tail is missing: shard 0 says there are 4
  fs::rename(fs::path(out) / "shard-00002.h5", fs::path(out) / "shard-00001.h5");
  try {
    TokenDatasetReader reader(out);
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("shard-00000.h5"));
    EXPECT_THAT(e.what(), HasSubstr("of 4"));
  }
}

TEST_F(TokenDatasetTest, GarbageAndForeignFilesAreRefusedNamingTheFile) {
  const std::string garbage = path("garbage.h5");
  std::ofstream(garbage) << "this is not HDF5";
  try {
    TokenDatasetReader reader(garbage);
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(garbage));
  }
  const std::string foreign = path("foreign.h5");
  {
    h5::File f = h5::file_create(foreign, h5::FileLocking::best_effort);
    h5::attr_write_string(f.get(), "format", "something-else");
    h5::file_close(f);
  }
  try {
    TokenDatasetReader reader(foreign);
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(foreign));
    EXPECT_THAT(e.what(), HasSubstr("not a ranktune token dataset"));
  }
  EXPECT_THROW(TokenDatasetReader(path("absent.h5")), DataError);
}

// Where HDF5 put the first chunk of `targets` (file offset, bytes).
std::pair<std::uint64_t, std::uint64_t> first_targets_chunk(const std::string& file) {
  haddr_t addr = 0;
  hsize_t size = 0;
  h5::File f = h5::file_open(file, h5::FileLocking::best_effort);
  h5::Dataset ds(H5Dopen2(f.get(), "targets", H5P_DEFAULT));
  h5::Dataspace space(H5Dget_space(ds.get()));
  hsize_t offset[2];
  unsigned mask = 0;
  EXPECT_GE(H5Dget_chunk_info(ds.get(), space.get(), 0, offset, &mask, &addr, &size), 0);
  return {addr, size};
}

TEST_F(TokenDatasetTest, AFlippedByteIsAnErrorNamingTheShard) {
  const std::string out = path("flip");
  write(out, make_rows(40, 16), 16, 20);
  const std::string victim = (fs::path(out) / "shard-00001.h5").string();
  const auto [addr, size] = first_targets_chunk(victim);
  flip_bit(victim, addr + size / 2, 4);
  try {
    TokenDatasetReader reader(out);
    FAIL() << "a flipped byte was not detected";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("token dataset '" + victim + "' is damaged: its CRC32C is"));
    EXPECT_THAT(e.hint(), HasSubstr("re-run `ranktune prepare`"));
  }
}

// The ranks of a node share the read-through (ChecksumShare): the rank given a damaged shard finds it; the others
// check only its header and size (train agrees on the outcome before any rank opens a file with HDF5).
TEST_F(TokenDatasetTest, TheRankGivenAShardReadsItThrough) {
  const std::string out = path("share");
  write(out, make_rows(60, 16), 16, 20);
  const std::string victim = (fs::path(out) / "shard-00001.h5").string();
  const auto [addr, size] = first_targets_chunk(victim);
  flip_bit(victim, addr + size / 2, 4);
  EXPECT_EQ(token_dataset_verify(victim, /*read_through=*/false), TokenDatasetChecksum::header_only);
  EXPECT_NO_THROW(token_dataset_verify_files(out, ChecksumShare{0, 2}));  // files 0 and 2: intact
  EXPECT_NO_THROW(TokenDatasetReader(out, /*read_through=*/false));       // headers only: the chunk is not read
  try {
    token_dataset_verify_files(out, ChecksumShare{1, 2});
    FAIL() << "the rank given shard 1 did not detect its flipped byte";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("token dataset '" + victim + "' is damaged: its CRC32C is"));
  }
}

// Damage that happens after the checksum was checked (the file changed under a running job) is still caught when
// the chunk is read, by its Fletcher32.
TEST_F(TokenDatasetTest, AChunkDamagedAfterOpeningIsAnErrorWhenRead) {
  const std::string out = path("late");
  write(out, make_rows(40, 16), 16, 20);
  const std::string victim = (fs::path(out) / "shard-00001.h5").string();
  const auto [addr, size] = first_targets_chunk(victim);
  TokenDatasetReader reader(out);  // opening reads the attributes, not the chunks
  flip_bit(victim, addr + size / 2, 4);
  EXPECT_NO_THROW(reader.read(0, 20));
  try {
    reader.read(15, 10);
    FAIL() << "a flipped byte was not detected";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(victim));
    EXPECT_THAT(e.what(), HasSubstr("Fletcher32"));
  }
}

// The header in the user block, read independently of the writer: magic, version, block size, file size, and a
// CRC32C of the whole file with the CRC field zeroed; HDF5 itself sees a 512-byte user block.
TEST_F(TokenDatasetTest, EveryFileCarriesAWholeFileChecksum) {
  const std::string out = path("sum");
  write(out, make_rows(10, 8), 8, 4);
  for (const char* name : {"shard-00000.h5", "shard-00001.h5", "shard-00002.h5"}) {
    const std::string file = (fs::path(out) / name).string();
    std::vector<char> b = bytes_of(file);
    ASSERT_GT(b.size(), kTokenDatasetUserBlock);
    EXPECT_EQ(std::string(b.data(), 16), "ranktune-tokens\n");
    auto le = [&](std::size_t at, int n) {
      std::uint64_t v = 0;
      for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
      return v;
    };
    EXPECT_EQ(le(16, 4), 1u);
    EXPECT_EQ(le(20, 4), kTokenDatasetUserBlock);
    EXPECT_EQ(le(24, 8), b.size());
    const auto stored = static_cast<std::uint32_t>(le(32, 4));
    std::fill(b.begin() + 32, b.begin() + 36, 0);
    EXPECT_EQ(crc32c(b.data(), b.size()), stored) << name;
    EXPECT_TRUE(std::all_of(b.begin() + 36, b.begin() + kTokenDatasetUserBlock, [](char c) { return c == 0; }));
    EXPECT_EQ(token_dataset_verify(file), TokenDatasetChecksum::verified);
    h5::File f = h5::file_open(file, h5::FileLocking::best_effort);
    h5::Plist fcpl(H5Fget_create_plist(f.get()));
    hsize_t block = 0;
    ASSERT_GE(H5Pget_userblock(fcpl.get(), &block), 0);
    EXPECT_EQ(block, kTokenDatasetUserBlock);
  }
  EXPECT_TRUE(TokenDatasetReader(out).checksummed());
}

// One flipped bit anywhere outside the row chunks (the header, the superblock, object headers, B-trees, the local
// and global heaps that hold the string attributes) is refused by the checksum with one DataError naming the file,
// before HDF5 parses anything: in #16 such flips crashed HDF5 with SIGSEGV or hung it.
TEST_F(TokenDatasetTest, EveryMetadataBitFlipIsRefusedBeforeHdf5) {
  const std::string good = path("good.h5"), bad = path("bad.h5");
  write(good, make_rows(6, 8), 8, 0);
  const std::vector<char> original = bytes_of(good);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> chunks;
  {
    h5::File f = h5::file_open(good, h5::FileLocking::best_effort);
    for (const char* name : {"tokens", "targets", "positions"}) {
      h5::Dataset ds(H5Dopen2(f.get(), name, H5P_DEFAULT));
      haddr_t addr = 0;
      hsize_t size = 0;
      ASSERT_GE(H5Dget_chunk_info_by_coord(ds.get(), std::array<hsize_t, 2>{0, 0}.data(), nullptr, &addr, &size), 0);
      chunks.emplace_back(addr, addr + size);
    }
  }
  const auto in_chunk = [&](std::uint64_t at) {
    return std::any_of(chunks.begin(), chunks.end(), [&](const auto& c) { return at >= c.first && at < c.second; });
  };
  write_bytes(bad, original);
  int flips = 0;
  for (std::uint64_t at = 0; at < original.size(); ++at) {
    if (in_chunk(at)) continue;
    // Every bit of the header's fields and of HDF5's superblock; elsewhere one bit per byte (rotating), to stay fast.
    for (int bit = 0; bit < 8; ++bit) {
      const bool every_bit = at < 40 || (at >= kTokenDatasetUserBlock && at < kTokenDatasetUserBlock + 96);
      if (!every_bit && bit != static_cast<int>(at % 8)) continue;
      flip_bit(bad, at, bit);
      ++flips;
      try {
        TokenDatasetReader reader(bad);
        ADD_FAILURE() << "offset " << at << " bit " << bit << ": not detected";
      } catch (const DataError& e) {
        const std::string what = e.what();
        if (what.find("token dataset '" + bad + "'") == std::string::npos || what.find('\n') != std::string::npos)
          ADD_FAILURE() << "offset " << at << " bit " << bit << ": " << what;
      }
      flip_bit(bad, at, bit);
    }
  }
  EXPECT_EQ(bytes_of(bad), original);
  EXPECT_GT(flips, static_cast<int>(original.size() - 3 * 64 * 1024));  // the header and all HDF5 metadata
}

// A file of the previous format, HDF5 from byte 0 without the user block (as `ranktune prepare` wrote it before
// the checksum: the same HDF5 with the user block cut off, which HDF5 reads at its new place), is still read.
TEST_F(TokenDatasetTest, FilesWithoutTheChecksumAreStillRead) {
  const auto rows = make_rows(9, 8);
  const std::string now = path("now.h5"), before = path("before.h5");
  write(now, rows, 8, 0);
  const std::vector<char> b = bytes_of(now);
  write_bytes(before, std::vector<char>(b.begin() + kTokenDatasetUserBlock, b.end()));
  EXPECT_EQ(token_dataset_verify(before), TokenDatasetChecksum::absent);
  TokenDatasetReader reader(before);
  EXPECT_FALSE(reader.checksummed());
  EXPECT_EQ(reader.info().rows, 9);
  expect_rows_equal(reader.read(0, 9), rows);
}

TEST_F(TokenDatasetTest, AFifoIsRefusedWithoutBlocking) {
  const std::string fifo = path("pipe.h5");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    TokenDatasetReader reader(fifo);
    FAIL() << "a FIFO was accepted";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'" + fifo + "' is a FIFO, not a regular file"));
  }
  EXPECT_THROW(token_dataset_verify(fifo), DataError);  // also without the reader's check in front
  const std::string dir = path("shards");
  write(dir, make_rows(6, 8), 8, 3);
  fs::remove(fs::path(dir) / "shard-00001.h5");
  ASSERT_EQ(::mkfifo((fs::path(dir) / "shard-00001.h5").c_str(), 0600), 0);
  EXPECT_THROW(TokenDatasetReader{dir}, DataError);
}

TEST_F(TokenDatasetTest, AShortOrForeignHeaderIsRefused) {
  const std::string good = path("g.h5");
  write(good, make_rows(4, 8), 8, 0);
  std::vector<char> b = bytes_of(good);
  const std::string cut = path("cut.h5");
  write_bytes(cut, std::vector<char>(b.begin(), b.end() - 1));
  try {
    TokenDatasetReader reader(cut);
    FAIL() << "a truncated file was accepted";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'" + cut + "' is damaged: it is " + std::to_string(b.size() - 1) + " bytes"));
  }
  const std::string header_only = path("header.h5");
  write_bytes(header_only, std::vector<char>(b.begin(), b.begin() + 100));
  EXPECT_THROW(TokenDatasetReader{header_only}, DataError);
}

TEST_F(TokenDatasetTest, NothingAppearsWithoutCommit) {
  const std::string out = path("never.h5");
  {
    TokenDatasetWriter w(out, 8, 0);
    for (const auto& r : make_rows(3, 8)) w.add(r);
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::is_empty(dir_.path()));  // the temp file is gone too
}

TEST_F(TokenDatasetTest, AnExistingShardDirectoryIsNotOverwritten) {
  const std::string out = path("taken");
  fs::create_directories(out);
  EXPECT_THROW(TokenDatasetWriter(out, 8, 4), DataError);
  EXPECT_THROW(TokenDatasetWriter(out, 8, 0), DataError);
}

}  // namespace
}  // namespace ranktune
