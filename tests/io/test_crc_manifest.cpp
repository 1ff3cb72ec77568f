// crc32c against the RFC 3720 vectors (hardware and table paths), and manifest.json: round trip, self-checksum,
// and the structural rules a reader enforces.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "ranktune/core/error.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/manifest.h"
#include "support/scratch_dir.h"

using namespace ranktune;

TEST(Crc32c, KnownVectors) {
  const std::string check = "123456789";
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xFF), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<unsigned char>(i), dec[i] = static_cast<unsigned char>(31 - i);
  for (auto fn : {&crc32c, &crc32c_table}) {
    EXPECT_EQ(fn(check.data(), check.size(), 0), 0xE3069283u);
    EXPECT_EQ(fn(zeros.data(), 32, 0), 0x8A9136AAu);  // RFC 3720 B.4
    EXPECT_EQ(fn(ones.data(), 32, 0), 0x62A8AB43u);
    EXPECT_EQ(fn(inc.data(), 32, 0), 0x46DD794Eu);
    EXPECT_EQ(fn(dec.data(), 32, 0), 0x113FDB5Cu);
    EXPECT_EQ(fn(nullptr, 0, 0), 0u);
  }
}

TEST(Crc32c, PathsAgreeAndChunkingDoesNotMatter) {
  std::mt19937 gen(3);
  std::vector<unsigned char> buf(100003);
  for (auto& b : buf) b = static_cast<unsigned char>(gen());
  for (std::size_t off : {0, 1, 3, 7}) {
    const std::size_t n = buf.size() - off;
    const std::uint32_t whole = crc32c(buf.data() + off, n);
    EXPECT_EQ(whole, crc32c_table(buf.data() + off, n));
    const std::size_t cut = 4093 + off;
    EXPECT_EQ(whole, crc32c(buf.data() + off + cut, n - cut, crc32c(buf.data() + off, cut)));
  }
}

// The hardware path runs three chains over blocks of 8 KiB and joins them: lengths around multiples of 24 KiB, and
// a continued CRC, must give the table's value.
TEST(Crc32c, InterleavedBlocksAgreeWithTheTable) {
  std::mt19937 gen(19);
  std::vector<unsigned char> buf(5 * 24576 + 64);
  for (auto& b : buf) b = static_cast<unsigned char>(gen());
  for (std::size_t k : {1, 2, 5})
    for (std::size_t n : {k * 24576 - 8, k * 24576 - 1, k * 24576, k * 24576 + 1, k * 24576 + 8, k * 24576 + 63}) {
      EXPECT_EQ(crc32c(buf.data(), n), crc32c_table(buf.data(), n)) << n;
      EXPECT_EQ(crc32c(buf.data(), n, 0x12345678u), crc32c_table(buf.data(), n, 0x12345678u)) << n;
    }
}

TEST(Crc32c, File) {
  const test::ScratchDir dir("crc");
  const std::filesystem::path path = dir.path() / "data";
  std::vector<char> data(9 << 20);  // crosses the 4 MiB read buffer
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 2654435761u >> 13);
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
  const FileDigest d = crc32c_file(path);
  EXPECT_EQ(d.size, data.size());
  EXPECT_EQ(d.crc32c, crc32c(data.data(), data.size()));
  std::filesystem::remove(path);
  EXPECT_THROW(crc32c_file(path), std::system_error);
}

// Joining the CRCs of two pieces gives the CRC of the whole, for any cut (empty pieces included).
TEST(Crc32c, CombineJoinsPieces) {
  std::mt19937 gen(5);
  std::vector<unsigned char> buf(70001);
  for (auto& b : buf) b = static_cast<unsigned char>(gen());
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{8191}, std::size_t{65536}, buf.size()}) {
    const std::uint32_t a = crc32c(buf.data(), cut), b = crc32c(buf.data() + cut, buf.size() - cut);
    EXPECT_EQ(crc32c_combine(a, b, buf.size() - cut), crc32c_table(buf.data(), buf.size())) << cut;
  }
}

// Segments of 64 MiB read by several threads and joined: the serial CRC of the table path, whatever the thread count,
// for sizes just under, at and over segment boundaries.
TEST(Crc32c, FileSegmentsOnThreadsEqualOneThread) {
  const test::ScratchDir dir("crc_threads");
  const std::filesystem::path path = dir.path() / "data";
  constexpr std::size_t kSegment = std::size_t{64} << 20;
  std::vector<unsigned char> data(2 * kSegment + 12345, 0);
  for (std::size_t i = 0; i < data.size(); i += 4093) data[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
  for (const std::size_t n : {kSegment - 1, kSegment, kSegment + 1, 2 * kSegment + 12345}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(n));
    const std::uint32_t want = crc32c_table(data.data(), n);
    for (const int threads : {1, 2, 4}) {
      const FileDigest d = crc32c_file(path, threads);
      EXPECT_EQ(d.size, n) << threads;
      EXPECT_EQ(d.crc32c, want) << n << " bytes on " << threads << " thread(s)";
    }
  }
}

namespace {
Manifest sample() {
  Manifest m;
  m.ranktune_version = "0.1.0";
  m.created_utc = "2025-01-02T03:04:05Z";
  m.step = 123;
  m.world_size = 2;
  m.mode = "ddp";
  m.topology = "node1: cuda:0 cuda:1 — Grüße";
  m.replicated = true;
  m.config_hash = 0xfedcba9876543210ull;
  m.files = {{"rank_00000.h5", 0, 123456789012ull, 0xdeadbeef}, {"rank_00001.h5", 1, 4096, 0x00000001}};
  return m;
}
}  // namespace

TEST(Manifest, RoundTrip) {
  const Manifest m = sample();
  const Manifest r = manifest_from_json(manifest_to_json(m), "x");
  EXPECT_EQ(r.step, m.step);
  EXPECT_EQ(r.world_size, m.world_size);
  EXPECT_EQ(r.mode, m.mode);
  EXPECT_EQ(r.topology, m.topology);
  EXPECT_EQ(r.replicated, m.replicated);
  EXPECT_EQ(r.config_hash, m.config_hash);
  EXPECT_EQ(r.created_utc, m.created_utc);
  ASSERT_EQ(r.files.size(), 2u);
  EXPECT_EQ(r.files[0].size, 123456789012ull);
  EXPECT_EQ(r.files[0].crc32c, 0xdeadbeefu);
  EXPECT_EQ(r.files[1].crc32c, 1u);
  EXPECT_EQ(manifest_to_json(r), manifest_to_json(m));
}

TEST(Manifest, EveryByteChangeIsRejectedOrHarmless) {
  const std::string good = manifest_to_json(sample());
  int rejected = 0;
  for (std::size_t i = 0; i < good.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      try {
        manifest_from_json(bad, "m.json");
        ADD_FAILURE() << "accepted a flip of bit " << bit << " at byte " << i << " ('" << good[i] << "')";
      } catch (const CheckpointError& e) {
        EXPECT_EQ(std::string(e.what()).rfind("m.json: ", 0), 0u) << e.what();
        ++rejected;
      }
    }
  EXPECT_EQ(rejected, static_cast<int>(good.size() * 8));
}

TEST(Manifest, StructuralRules) {
  auto expect_reject = [](Manifest m, const std::string& needle) {
    try {
      manifest_from_json(manifest_to_json(m), "m.json");
      ADD_FAILURE() << "accepted, expected: " << needle;
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Manifest m = sample();
  m.files.pop_back();
  expect_reject(m, "lists 1 files for world size 2");
  m = sample();
  std::swap(m.files[0], m.files[1]);
  expect_reject(m, "expected rank_00000.h5");
  m = sample();
  m.files[1].name = "../evil.h5";
  expect_reject(m, "expected rank_00001.h5");
  m = sample();
  m.format_version = kCheckpointFormatVersion + 1;
  expect_reject(m, "not readable by this build");
  EXPECT_THROW(manifest_from_json("{}", "m.json"), CheckpointError);
  EXPECT_THROW(manifest_from_json("", "m.json"), CheckpointError);
}

TEST(Manifest, Names) {
  EXPECT_EQ(step_dir_name(123), "step_00000123");
  EXPECT_EQ(step_dir_name(1234567890), "step_1234567890");
  EXPECT_EQ(step_from_dir_name("step_00000123"), 123);
  EXPECT_EQ(step_from_dir_name("step_1234567890"), 1234567890);
  EXPECT_FALSE(step_from_dir_name("step_"));
  EXPECT_FALSE(step_from_dir_name("step_12a"));
  EXPECT_FALSE(step_from_dir_name("step_00000123.tmp.5"));
  EXPECT_FALSE(step_from_dir_name("latest"));
  EXPECT_EQ(rank_file_name(3), "rank_00003.h5");
}
