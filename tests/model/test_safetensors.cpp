// safetensors: reads a file written by the python library, writes the same bytes back, round-trips every dtype, and
// refuses damaged files (truncated, lying shapes, offsets out of range or overlapping) naming the file and tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/model/safetensors.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// The python-written fixture split into header text and data section.
struct Parts {
  std::string header, data;
};

Parts split(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {file.substr(8, n), file.substr(8 + n)};
}

std::string join(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return s.replace(pos, from.size(), to);
}

// Opening `bytes` as a file must fail with a CheckpointError naming the file and `needle`.
void expect_damaged(const test::ScratchDir& dir, const std::string& bytes, const std::string& needle) {
  const std::string path = dir / "damaged.safetensors";
  write_bytes(path, bytes);
  try {
    SafetensorsFile f(path);
    ADD_FAILURE() << "accepted a damaged file; expected: " << needle;
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ReadsPythonWrittenFile) {
  const SafetensorsFile f(test::fixture("format.safetensors"));
  ASSERT_EQ(f.entries().size(), 6u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_TRUE(at::equal(f.tensor("d.i64"), at::arange(6, at::kLong).reshape({2, 3})));
  EXPECT_EQ(f.find("b.bf16")->dtype, at::kBFloat16);
  EXPECT_EQ(f.find("c.f16")->dtype, at::kHalf);
  EXPECT_EQ(f.tensor("e.scalar").dim(), 0);
  EXPECT_EQ(f.tensor("e.scalar").item<float>(), 3.5f);
  EXPECT_EQ(f.tensor("f.empty").sizes(), at::IntArrayRef({0, 4}));
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_THROW(f.tensor("nope"), CheckpointError);
}

TEST(Safetensors, WritesTheSameBytesAsPython) {
  const std::string original = test::fixture("format.safetensors");
  const SafetensorsFile f(original);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& e : f.entries()) tensors.emplace_back(e.name, f.tensor(e.name));
  test::ScratchDir dir("st_bytes");
  safetensors_save(dir / "out.safetensors", tensors, {{"format", "pt"}});
  EXPECT_EQ(read_bytes(dir / "out.safetensors"), read_bytes(original));
}

TEST(Safetensors, RoundTripsEveryDtype) {
  test::ScratchDir dir("st_round");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const at::Tensor base = at::randn({3, 7});
  for (const auto t : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kLong, at::kInt, at::kShort, at::kChar,
                       at::kByte, at::kBool, at::kUInt16, at::kUInt32, at::kUInt64}) {
    tensors.emplace_back(std::string("t_") + c10::toString(t), (base * 10).to(t));
  }
  tensors.emplace_back("strided", base.t());  // non-contiguous input
  safetensors_save(dir / "all.safetensors", tensors, {{"k", "v"}, {"a", "b"}});
  const SafetensorsFile f(dir / "all.safetensors");
  EXPECT_EQ(f.metadata().size(), 2u);
  for (const auto& [name, t] : tensors) {
    const at::Tensor back = f.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back, t)) << name;
  }
  EXPECT_THROW(safetensors_save(dir / "dup.safetensors", {{"a", base}, {"a", base}}), CheckpointError);
}

TEST(Safetensors, TensorsAreCopyOnWrite) {
  test::ScratchDir dir("st_cow");
  safetensors_save(dir / "x.safetensors", {{"x", at::ones({4})}});
  {
    const SafetensorsFile f(dir / "x.safetensors");
    at::Tensor t = f.tensor("x");
    t.fill_(7);
  }
  EXPECT_TRUE(at::equal(SafetensorsFile(dir / "x.safetensors").tensor("x"), at::ones({4})));
}

TEST(Safetensors, TensorOutlivesTheFileObject) {
  at::Tensor t;
  {
    const SafetensorsFile f(test::fixture("format.safetensors"));
    t = f.tensor("a.f32");
  }
  EXPECT_EQ(t.numel(), 8);
  EXPECT_TRUE(t.isfinite().all().item<bool>());
}

TEST(Safetensors, RefusesDamagedFiles) {
  test::ScratchDir dir("st_damaged");
  const std::string good = read_bytes(test::fixture("format.safetensors"));
  const Parts p = split(good);

  expect_damaged(dir, good.substr(0, good.size() - 10), "c.f16");  // truncated download
  expect_damaged(dir, good.substr(0, good.size() - 10), "truncated");
  expect_damaged(dir, good.substr(0, 5), "shorter than the 8-byte header length");
  expect_damaged(dir, join(p.header, p.data + "junk"), "bytes follow the last tensor");
  expect_damaged(dir, join(replaced(p.header, "\"shape\":[4,2]", "\"shape\":[4,3]"), p.data), "a.f32");
  expect_damaged(dir, join(replaced(p.header, "\"shape\":[4,2]", "\"shape\":[4,-2]"), p.data), "a.f32");
  expect_damaged(dir,
                 join(replaced(p.header, "\"shape\":[4,2]", "\"shape\":[4611686018427387904,4611686018427387904]"),
                      p.data),
                 "a.f32");
  expect_damaged(dir, join(replaced(p.header, "[0,48]", "[0,4800]"), p.data), "d.i64");
  expect_damaged(dir, join(replaced(p.header, "[48,80]", "[40,72]"), p.data), "overlaps");
  expect_damaged(dir, join(replaced(p.header, "\"F32\",\"shape\":[4,2]", "\"Q32\",\"shape\":[4,2]"), p.data), "a.f32");
  expect_damaged(dir, join(replaced(p.header, "{\"__metadata__\"", "[\"__metadata__\""), p.data), "not valid JSON");

  std::string huge = good;
  const std::uint64_t big = std::uint64_t(1) << 40;
  std::memcpy(huge.data(), &big, 8);
  expect_damaged(dir, huge, "header length");
  std::string past = good;
  const std::uint64_t n = good.size();
  std::memcpy(past.data(), &n, 8);
  expect_damaged(dir, past, "runs past the end");

  EXPECT_THROW(SafetensorsFile(dir / "missing.safetensors"), CheckpointError);
}

}  // namespace
}  // namespace ranktune
