// Streaming write-back of checkpoint files (issue #19): the range schedule of WritebackSchedule, FileWriteback on a
// real file, and the h5 writer calling it after every slice.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <random>
#include <vector>

#include "ranktune/io/crc32c.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/io/h5.h"
#include "support/scratch_dir.h"

using namespace ranktune;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
}

TEST(WritebackSchedule, StartsOnceEnoughIsNewAndWaitsBehindTheLag) {
  WritebackSchedule s(8 * MiB, 32 * MiB);
  WritebackStep step = s.advance(3 * MiB);  // below min_bytes: batched with what follows
  EXPECT_EQ(step.start.length, 0u);
  EXPECT_EQ(step.wait.length, 0u);
  step = s.advance(10 * MiB);
  EXPECT_EQ(step.start.offset, 0u);
  EXPECT_EQ(step.start.length, 10 * MiB);
  EXPECT_EQ(step.wait.length, 0u);  // nothing is 32 MiB behind yet
  step = s.advance(40 * MiB);
  EXPECT_EQ(step.start.offset, 10 * MiB);
  EXPECT_EQ(step.start.length, 30 * MiB);
  EXPECT_EQ(step.wait.offset, 0u);
  EXPECT_EQ(step.wait.length, 8 * MiB);  // up to 40 - 32
  step = s.advance(30 * MiB);            // a shorter file: nothing
  EXPECT_EQ(step.start.length, 0u);
  EXPECT_EQ(step.wait.length, 0u);
  step = s.advance(104 * MiB);
  EXPECT_EQ(step.start.offset, 40 * MiB);
  EXPECT_EQ(step.start.length, 64 * MiB);
  EXPECT_EQ(step.wait.offset, 8 * MiB);
  EXPECT_EQ(step.wait.length, 64 * MiB);
}

// Any growth pattern: the started and the waited ranges each tile [0, x) without gap or overlap, the wait never
// reaches bytes less than lag_bytes behind the started end, and the bytes in flight stay bounded.
TEST(WritebackSchedule, RangesTileTheFileAndBoundWhatIsInFlight) {
  std::mt19937_64 gen(19);
  for (int trial = 0; trial < 50; ++trial) {
    const std::uint64_t min = 1 + gen() % (16 * MiB), lag = gen() % (256 * MiB);
    WritebackSchedule s(min, lag);
    std::uint64_t end = 0, started = 0, waited = 0, largest_start = 0;
    for (int i = 0; i < 200; ++i) {
      end += gen() % (70 * MiB);
      const WritebackStep step = s.advance(end);
      if (step.start.length > 0) {
        ASSERT_EQ(step.start.offset, started);
        ASSERT_GE(step.start.length, min);
        started += step.start.length;
        ASSERT_EQ(started, end);
        largest_start = std::max(largest_start, step.start.length);
      } else {
        ASSERT_LT(end - started, min);
      }
      if (step.wait.length > 0) {
        ASSERT_EQ(step.wait.offset, waited);
        waited += step.wait.length;
        ASSERT_EQ(waited + lag, started);
      }
      ASSERT_LE(waited, started);
      if (step.start.length > 0) ASSERT_LE(started - waited, lag);
    }
    EXPECT_GT(started, 0u);
  }
}

TEST(FileWriteback, LeavesTheBytesAsWrittenAndIgnoresAMissingFile) {
  const test::ScratchDir dir("writeback");
  const auto path = dir.path() / "data";
  std::vector<char> block(MiB);
  std::uint32_t crc = 0;
  {
    std::ofstream out(path, std::ios::binary);
    FileWriteback wb(path, MiB, 4 * MiB);
    for (int i = 0; i < 24; ++i) {
      for (std::size_t j = 0; j < block.size(); ++j) block[j] = static_cast<char>((j * 2654435761u >> 11) + i);
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
      out.flush();
      crc = crc32c(block.data(), block.size(), crc);
      wb.advance();
    }
  }
  const FileDigest d = crc32c_file(path);
  EXPECT_EQ(d.size, 24 * MiB);
  EXPECT_EQ(d.crc32c, crc);
  FileWriteback missing(dir.path() / "absent");
  EXPECT_NO_THROW(missing.advance());
}

// The writer calls after_write once per slice (a dataset above slice_bytes) and once per smaller dataset; the file's
// bytes do not depend on it.
TEST(FileWriteback, H5WriterCallsItAfterEverySlice) {
  const test::ScratchDir dir("writeback_h5");
  const at::Tensor big = at::arange(3 * 1024 * 1024, at::kFloat).reshape({3 * 1024, 1024});  // 12 MiB
  const at::Tensor small = at::ones({16}, at::kLong);
  std::vector<FileDigest> digests;
  for (bool hook : {false, true}) {
    const auto path = dir.path() / (hook ? "hook.h5" : "plain.h5");
    int calls = 0;
    h5::TensorWriteOptions opts;
    opts.slice_bytes = 4 * MiB;
    if (hook) opts.after_write = [&calls] { ++calls; };
    h5::File f = h5::file_create(path.string(), h5::FileLocking::off);
    h5::tensor_write(f.get(), "big", big, opts);
    h5::tensor_write(f.get(), "small", small, opts);
    h5::file_close(f);
    EXPECT_EQ(calls, hook ? 3 + 1 : 0);
    digests.push_back(crc32c_file(path));
  }
  EXPECT_EQ(digests[0].size, digests[1].size);
  EXPECT_EQ(digests[0].crc32c, digests[1].crc32c);
}
