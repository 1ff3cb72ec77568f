// The GGUF container byte by byte: header, every value encoding (scalars, strings, arrays), tensor infos with ggml's
// innermost-first dimensions, offsets and data aligned to general.alignment, the refusals; fp16 rounding against
// LibTorch's c10::Half, and Q8_0 blocks (scale, round half away from zero). The gguf Python package reads real exports
// back in tests/integration/export_gguf.sh.
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ranktune/io/gguf_writer.h"
#include "support/scratch_dir.h"

using namespace ranktune;

namespace {

std::vector<std::uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Reads a GGUF file front to back, as llama.cpp's gguf.cpp does.
struct Cursor {
  const std::vector<std::uint8_t>& b;
  std::size_t pos = 0;
  template <class T>
  T get() {
    T v;
    EXPECT_LE(pos + sizeof(T), b.size());
    std::memcpy(&v, b.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    const auto n = get<std::uint64_t>();
    std::string s(reinterpret_cast<const char*>(b.data() + pos), n);
    pos += n;
    return s;
  }
};

std::vector<std::uint8_t> bytes(std::initializer_list<int> v) { return {v.begin(), v.end()}; }

}  // namespace

TEST(GgufWriter, HeaderAndValueEncodings) {
  test::ScratchDir dir("gguf_values");
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 7);
  w.add_i32("x.i32", -5);
  w.add_f32("x.f32", 0.25f);
  w.add_bool("x.bool", true);
  w.add_strings("x.strings", {"a b", "", "\xc4\xa0"});
  w.add_i32s("x.i32s", {1, -2});
  w.add_f32s("x.f32s", {});
  const std::string path = dir / "v.gguf";
  const std::uint64_t size = w.write(path);
  const auto b = read_all(path);
  ASSERT_EQ(size, b.size());
  Cursor c{b};
  EXPECT_EQ(std::string(b.begin(), b.begin() + 4), "GGUF");
  EXPECT_EQ(c.get<std::uint32_t>(), 0x46554747u);
  EXPECT_EQ(c.get<std::uint32_t>(), 3u);  // version
  EXPECT_EQ(c.get<std::uint64_t>(), 0u);  // tensors
  EXPECT_EQ(c.get<std::uint64_t>(), 9u);  // 8 keys + general.alignment
  EXPECT_EQ(c.str(), "general.architecture");
  EXPECT_EQ(c.get<std::uint32_t>(), 8u);  // string
  EXPECT_EQ(c.str(), "llama");
  EXPECT_EQ(c.str(), "llama.block_count");
  EXPECT_EQ(c.get<std::uint32_t>(), 4u);  // u32
  EXPECT_EQ(c.get<std::uint32_t>(), 7u);
  EXPECT_EQ(c.str(), "x.i32");
  EXPECT_EQ(c.get<std::uint32_t>(), 5u);
  EXPECT_EQ(c.get<std::int32_t>(), -5);
  EXPECT_EQ(c.str(), "x.f32");
  EXPECT_EQ(c.get<std::uint32_t>(), 6u);
  EXPECT_EQ(c.get<float>(), 0.25f);
  EXPECT_EQ(c.str(), "x.bool");
  EXPECT_EQ(c.get<std::uint32_t>(), 7u);
  EXPECT_EQ(c.get<std::uint8_t>(), 1u);  // one byte
  EXPECT_EQ(c.str(), "x.strings");
  EXPECT_EQ(c.get<std::uint32_t>(), 9u);  // array
  EXPECT_EQ(c.get<std::uint32_t>(), 8u);  // of strings
  EXPECT_EQ(c.get<std::uint64_t>(), 3u);
  EXPECT_EQ(c.str(), "a b");
  EXPECT_EQ(c.str(), "");
  EXPECT_EQ(c.str(), "\xc4\xa0");
  EXPECT_EQ(c.str(), "x.i32s");
  EXPECT_EQ(c.get<std::uint32_t>(), 9u);
  EXPECT_EQ(c.get<std::uint32_t>(), 5u);
  EXPECT_EQ(c.get<std::uint64_t>(), 2u);
  EXPECT_EQ(c.get<std::int32_t>(), 1);
  EXPECT_EQ(c.get<std::int32_t>(), -2);
  EXPECT_EQ(c.str(), "x.f32s");
  EXPECT_EQ(c.get<std::uint32_t>(), 9u);
  EXPECT_EQ(c.get<std::uint32_t>(), 6u);
  EXPECT_EQ(c.get<std::uint64_t>(), 0u);
  EXPECT_EQ(c.str(), "general.alignment");
  EXPECT_EQ(c.get<std::uint32_t>(), 4u);
  EXPECT_EQ(c.get<std::uint32_t>(), 32u);
  // No tensors: the header is padded to the alignment all the same (the data section would start there).
  EXPECT_EQ(b.size() % 32, 0u);
  for (std::size_t i = c.pos; i < b.size(); ++i) EXPECT_EQ(b[i], 0) << i;
}

TEST(GgufWriter, TensorInfosAndAlignedData) {
  for (const std::uint32_t alignment : {32u, 64u}) {
    test::ScratchDir dir("gguf_tensors");
    GgufWriter w(alignment);
    w.add_string("general.architecture", "llama");
    // 3 F32 (12 bytes), a [2, 32] Q8_0 (68 bytes), a [2, 3] F16 (12 bytes): none a multiple of the alignment.
    const auto a = bytes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    std::vector<std::uint8_t> q(68);
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::uint8_t>(200 - i);
    const auto h = bytes({21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32});
    w.add_tensor("a.weight", {3}, GgmlType::f32, [a] { return a; });
    w.add_tensor("blk.0.q.weight", {2, 32}, GgmlType::q8_0, [q] { return q; });
    w.add_tensor("h", {2, 3}, GgmlType::f16, [h] { return h; });
    const std::string path = dir / "t.gguf";
    w.write(path);
    const auto b = read_all(path);
    Cursor c{b};
    c.pos = 8;
    EXPECT_EQ(c.get<std::uint64_t>(), 3u);
    EXPECT_EQ(c.get<std::uint64_t>(), 2u);
    EXPECT_EQ(c.str(), "general.architecture");
    c.get<std::uint32_t>();
    c.str();
    EXPECT_EQ(c.str(), "general.alignment");
    c.get<std::uint32_t>();
    EXPECT_EQ(c.get<std::uint32_t>(), alignment);
    struct Info {
      std::string name;
      std::vector<std::uint64_t> ne;
      std::uint32_t type;
      std::uint64_t offset;
    };
    std::vector<Info> infos;
    for (int i = 0; i < 3; ++i) {
      Info info{c.str(), {}, 0, 0};
      const auto n = c.get<std::uint32_t>();
      for (std::uint32_t d = 0; d < n; ++d) info.ne.push_back(c.get<std::uint64_t>());
      info.type = c.get<std::uint32_t>();
      info.offset = c.get<std::uint64_t>();
      infos.push_back(info);
    }
    EXPECT_EQ(infos[0].name, "a.weight");
    EXPECT_EQ(infos[0].ne, (std::vector<std::uint64_t>{3}));
    EXPECT_EQ(infos[0].type, 0u);
    EXPECT_EQ(infos[1].ne, (std::vector<std::uint64_t>{32, 2}));  // innermost first
    EXPECT_EQ(infos[1].type, 8u);
    EXPECT_EQ(infos[2].ne, (std::vector<std::uint64_t>{3, 2}));
    EXPECT_EQ(infos[2].type, 1u);
    // Offsets are relative to the data section, each tensor padded to the alignment.
    EXPECT_EQ(infos[0].offset, 0u);
    EXPECT_EQ(infos[1].offset, alignment);
    EXPECT_EQ(infos[2].offset, alignment == 32 ? 32u + 96 : 64u + 128);
    const std::size_t data = (c.pos + alignment - 1) / alignment * alignment;
    for (std::size_t i = c.pos; i < data; ++i) EXPECT_EQ(b[i], 0);
    EXPECT_EQ(b.size(), data + infos[2].offset + alignment);  // the last tensor is padded too
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin() + data + infos[0].offset));
    EXPECT_TRUE(std::equal(q.begin(), q.end(), b.begin() + data + infos[1].offset));
    EXPECT_TRUE(std::equal(h.begin(), h.end(), b.begin() + data + infos[2].offset));
    for (std::size_t i = data + a.size(); i < data + infos[1].offset; ++i) EXPECT_EQ(b[i], 0);
  }
}

TEST(GgufWriter, Refusals) {
  GgufWriter w;
  w.add_u32("k", 1);
  EXPECT_THROW(w.add_string("k", "again"), std::logic_error);
  EXPECT_THROW(w.add_u32("general.alignment", 64), std::logic_error);  // the writer's own key
  const auto none = [] { return std::vector<std::uint8_t>(); };
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), {1}, GgmlType::f32, none), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("q", {4, 48}, GgmlType::q8_0, none), std::invalid_argument);  // 48 is not 32k
  EXPECT_THROW(w.add_tensor("five", {1, 1, 1, 1, 1}, GgmlType::f32, none), std::invalid_argument);
  w.add_tensor(std::string(63, 'n'), {2}, GgmlType::f32, none);  // 63 bytes fit; the data callback is wrong
  EXPECT_THROW(w.add_tensor(std::string(63, 'n'), {2}, GgmlType::f32, none), std::invalid_argument);
  test::ScratchDir dir("gguf_refusals");
  EXPECT_THROW(w.write(dir / "x.gguf"), std::logic_error);  // 0 bytes given, 8 expected
  EXPECT_THROW(GgufWriter(24), std::invalid_argument);
  EXPECT_THROW(GgufWriter().write(dir / "missing/x.gguf"), std::system_error);
  EXPECT_EQ(ggml_type_bytes(GgmlType::q8_0, 64), 68u);
  EXPECT_EQ(ggml_type_bytes(GgmlType::bf16, 3), 6u);
}

TEST(GgufFp16, RoundsAsCHalf) {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -2.5f,
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          -70000.0f,
                          1e-8f,
                          2.98e-8f,
                          2.99e-8f,
                          5.96e-8f,
                          6.1e-5f,
                          6.1035156e-5f,
                          3.0517578e-5f,
                          0.1f,
                          1.0f / 3.0f,
                          std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::denorm_min()};
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    if (!std::isnan(f)) v.push_back(f);
  }
  for (int e = -26; e <= 16; ++e)  // ties at every binade, subnormals included
    for (const float m : {1.0f, 1.0004883f, 1.0009766f, 1.5f, 1.9995117f})
      v.push_back(std::ldexp(m, e)), v.push_back(-std::ldexp(m, e));
  for (const float f : v) ASSERT_EQ(fp16_from_fp32(f), c10::Half(f).x) << f;
  EXPECT_EQ(fp16_from_fp32(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
}

TEST(GgufQ8, BlocksRoundHalfAwayFromZero) {
  // max |x| = 127: d = 1 exactly, so each code is x rounded; halves go away from zero.
  std::vector<float> x(64, 0.0f);
  const float first[] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.49f, -126.6f, 3.5f};
  std::copy(std::begin(first), std::end(first), x.begin());
  for (int j = 0; j < 32; ++j) x[32 + j] = static_cast<float>(j - 16) * 0.01f;  // max 0.16 -> d = 0.16 / 127
  std::vector<std::uint8_t> out(68);
  gguf_q8_0_quantize(x.data(), x.size(), out.data());
  std::uint16_t d0;
  std::memcpy(&d0, out.data(), 2);
  EXPECT_EQ(d0, 0x3c00);  // 1.0
  const std::int8_t want[] = {127, 3, -3, 1, -1, 1, -127, 4};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(static_cast<std::int8_t>(out[2 + j]), want[j]) << j;
  for (int j = 8; j < 32; ++j) EXPECT_EQ(out[2 + j], 0);
  std::uint16_t d1;
  std::memcpy(&d1, out.data() + 34, 2);
  const float d = std::fabs(x[32]) / 127.0f;
  EXPECT_EQ(d1, c10::Half(d).x);
  for (int j = 0; j < 32; ++j) {
    const auto q = static_cast<std::int8_t>(out[36 + j]);
    EXPECT_NEAR(q * static_cast<float>(c10::Half(d)), x[32 + j], d / 2 + 1e-4f) << j;
  }
  EXPECT_EQ(static_cast<std::int8_t>(out[36]), -127);  // -0.16 is the block's max |x|
  std::vector<float> zeros(32, 0.0f);
  gguf_q8_0_quantize(zeros.data(), 32, out.data());
  for (int j = 0; j < 34; ++j) EXPECT_EQ(out[j], 0);  // d = 0: all codes 0, no division by zero
  EXPECT_THROW(gguf_q8_0_quantize(x.data(), 31, out.data()), std::invalid_argument);
}
