// Prepared token datasets: writer -> reader round trip (rows and attributes), shards concatenated in order and read
// across shard boundaries, a missing shard / foreign file / garbage file / flipped byte refused naming the file, and
// nothing visible at the output until commit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ranktune/data/data_error.h"
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

TEST_F(TokenDatasetTest, AFlippedByteIsAnErrorNamingTheShard) {
  const std::string out = path("flip");
  write(out, make_rows(40, 16), 16, 20);
  const std::string victim = (fs::path(out) / "shard-00001.h5").string();
  haddr_t addr = 0;
  hsize_t size = 0;
  {
    h5::File f = h5::file_open(victim, h5::FileLocking::best_effort);
    h5::Dataset ds(H5Dopen2(f.get(), "targets", H5P_DEFAULT));
    h5::Dataspace space(H5Dget_space(ds.get()));
    hsize_t offset[2];
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info(ds.get(), space.get(), 0, offset, &mask, &addr, &size), 0);
  }
  {
    std::fstream io(victim, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(addr + size / 2));
    char c = 0;
    io.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    io.seekp(static_cast<std::streamoff>(addr + size / 2));
    io.write(&c, 1);
  }
  TokenDatasetReader reader(out);  // opening reads attributes only
  EXPECT_NO_THROW(reader.read(0, 20));
  try {
    reader.read(15, 10);
    FAIL() << "a flipped byte was not detected";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(victim));
    EXPECT_THAT(e.what(), HasSubstr("Fletcher32"));
  }
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
