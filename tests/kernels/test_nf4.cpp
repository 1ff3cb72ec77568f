// NF4 against bitsandbytes 0.50 on CPU (tests/reference/make_nf4_fixtures.py): for every committed case (bf16, fp16,
// fp32; odd shapes, ties on the code midpoints, zero and equal blocks, extreme magnitudes, fixture-model weights) the
// quantization is byte-identical (packed codes, 8-bit absmaxes, nested absmaxes, offset, code tables, the quant-state
// JSON, transformers' tensor names) and the dequantization of bnb's own tensors equals bnb's bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/kernels/nf4.h"
#include "ranktune/model/safetensors.h"
#include "support/same_bits.h"

namespace ranktune {
namespace {

const SafetensorsFile& fixtures() {
  static const SafetensorsFile f(test::fixture("nf4/cases.safetensors"));
  return f;
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  std::stringstream s(fixtures().metadata().at("cases"));
  for (std::string c; std::getline(s, c, ',');) names.push_back(c);
  return names;
}

at::Tensor fx(const std::string& name) { return fixtures().tensor(name); }

std::string as_text(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  return {static_cast<const char*>(b.data_ptr()), static_cast<std::size_t>(b.numel())};
}

// Bit equality (so -0 differs from 0), with the count of differing elements when they differ.
using test::same_bits;

// bnb's own quantized tensors, as a loader of a "...-bnb-4bit" checkpoint builds them.
Nf4Weight from_fixture(const std::string& c) {
  Nf4Weight w;
  w.packed = fx(c + ".weight");
  w.absmax = fx(c + ".weight.absmax");
  w.quant_map = fx(c + ".weight.quant_map");
  w.nested_absmax = fx(c + ".weight.nested_absmax");
  w.nested_quant_map = fx(c + ".weight.nested_quant_map");
  const at::Tensor input = fx(c + ".input");
  w.shape = input.sizes().vec();
  w.dtype = input.scalar_type();
  const std::string json = as_text(fx(c + ".weight.quant_state.bitsandbytes__nf4"));
  const std::string key = "\"nested_offset\": ";
  w.offset = std::strtof(json.c_str() + json.find(key) + key.size(), nullptr);
  return w;
}

TEST(Nf4, FixturesCoverTheCases) {
  const auto names = case_names();
  EXPECT_GE(names.size(), 30u);
  for (const char* want :
       {"ties_fp32", "rand_bf16_5x33", "zero_blocks_fp32_164", "rand_bf16_4x4160", "model_down_proj_fp32"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

TEST(Nf4, CodeTablesEqualBitsandbytes) {
  EXPECT_TRUE(same_bits(nf4_code(), fx("rand_bf16_4x128.weight.quant_map")));
  EXPECT_TRUE(same_bits(nf4_dynamic_map(), fx("rand_bf16_4x128.weight.nested_quant_map")));
}

TEST(Nf4, QuantizeIsByteIdenticalToBitsandbytes) {
  for (const std::string& c : case_names()) {
    SCOPED_TRACE(c);
    const Nf4Weight q = nf4_quantize(fx(c + ".input"));
    EXPECT_TRUE(same_bits(q.packed, fx(c + ".weight"))) << "packed";
    EXPECT_TRUE(same_bits(q.absmax, fx(c + ".weight.absmax"))) << "absmax";
    EXPECT_TRUE(same_bits(q.nested_absmax, fx(c + ".weight.nested_absmax"))) << "nested_absmax";
    EXPECT_EQ(q.offset, from_fixture(c).offset);
    EXPECT_EQ(nf4_quant_state_json(q), as_text(fx(c + ".weight.quant_state.bitsandbytes__nf4")));
    // The state dict: transformers' names, bnb's tensors.
    std::set<std::string> names;
    for (const auto& [name, t] : nf4_state_dict(q, c + ".")) {
      names.insert(name);
      EXPECT_TRUE(same_bits(t, fx(name))) << name;
    }
    EXPECT_EQ(names.size(), 6u);
  }
}

TEST(Nf4, DequantizeIsBitIdenticalToBitsandbytes) {
  for (const std::string& c : case_names()) {
    SCOPED_TRACE(c);
    const Nf4Weight w = from_fixture(c);
    EXPECT_TRUE(same_bits(nf4_block_absmax(w), fx(c + ".block_absmax"))) << "block absmax";
    EXPECT_TRUE(same_bits(nf4_dequantize(w), fx(c + ".dequant"))) << "weight";
  }
}

// Equal in every field, for the CPU pass against the ATen reference.
void expect_same_quantization(const Nf4Weight& fast, const Nf4Weight& ref) {
  EXPECT_TRUE(same_bits(fast.packed, ref.packed)) << "packed";
  EXPECT_TRUE(same_bits(fast.absmax, ref.absmax)) << "absmax";
  EXPECT_TRUE(same_bits(fast.nested_absmax, ref.nested_absmax)) << "nested_absmax";
  EXPECT_TRUE(same_bits(fast.quant_map, ref.quant_map)) << "quant_map";
  EXPECT_TRUE(same_bits(fast.nested_quant_map, ref.nested_quant_map)) << "nested_quant_map";
  EXPECT_EQ(std::memcmp(&fast.offset, &ref.offset, sizeof(float)), 0) << fast.offset << " vs " << ref.offset;
  EXPECT_EQ(fast.shape, ref.shape);
  EXPECT_EQ(fast.dtype, ref.dtype);
}

// Weights that stress the 4-bit decisions: random blocks at scales from subnormal to large, blocks holding every
// code midpoint exactly (with a 1 so the scale is 1) and one ulp either side, zero blocks, all-equal blocks (the
// scaled values are +-1 or, for tiny values, come through the 1e-38 floor).
at::Tensor stress_weight(std::int64_t n, at::ScalarType dtype, std::uint64_t seed) {
  at::manual_seed(static_cast<std::int64_t>(seed));
  const at::Tensor scale = at::exp(at::randint(-30, 10, {(n + 63) / 64}).to(at::kFloat)).repeat_interleave(64);
  at::Tensor x = at::randn({n}) * scale.slice(0, 0, n);
  const at::Tensor code = nf4_code();
  const at::Tensor mids = ((code.slice(0, 0, -1) + code.slice(0, 1)) / 2).to(dtype).to(at::kFloat);
  const at::Tensor ties = at::cat({at::ones({1}), mids, at::nextafter(mids, at::full_like(mids, 2.0)),
                                   at::nextafter(mids, at::full_like(mids, -2.0)), -at::ones({1}), code});
  const std::int64_t blocks = n / 64;
  for (std::int64_t b = 0; b < blocks; ++b) {
    at::Tensor blk = x.slice(0, b * 64, b * 64 + 64);
    switch (b % 7) {
      case 1: blk.zero_(); break;
      case 2: blk.fill_(b % 2 ? 0.37 : -2.5); break;
      case 3: blk.slice(0, 0, ties.numel()).copy_(ties); break;
      case 4: blk.fill_(1e-40); break;  // subnormal in fp32; zero in fp16 and bf16 keeps it
      default: break;
    }
  }
  return x.to(dtype);
}

// m, then up to 40 values near the code midpoints times m whose code differs between x / m and x * (1 / m).
at::Tensor division_probes(float m) {
  const at::Tensor code = nf4_code();
  const at::Tensor mids = (code.slice(0, 0, -1) + code.slice(0, 1)) / 2;
  const at::Tensor mt = at::full({1}, m);
  std::vector<at::Tensor> near;
  for (double direction : {10.0, -10.0}) {
    at::Tensor x = mids * mt;
    for (int step = 0; step < 20; ++step) near.push_back(x = at::nextafter(x, at::full_like(x, direction)));
  }
  const at::Tensor xs = at::cat(near);
  const at::Tensor by_division = at::bucketize(at::clamp(xs / mt, -1, 1), mids);
  const at::Tensor by_reciprocal = at::bucketize(at::clamp(xs * mt.reciprocal(), -1, 1), mids);
  const at::Tensor found = xs.masked_select(by_division != by_reciprocal);
  return at::cat({mt, found.slice(0, 0, std::min<std::int64_t>(found.numel(), 40))});
}

// The CPU loops split their blocks over the intra-op threads; ctest runs with one, so these tests ask for three (an
// uneven split) and put the count back.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(Nf4, CpuPassEqualsReference) {
  const ThreadCount threads(3);
  // Odd and partial sizes, one ragged multi-dimensional shape, and sizes of several thousand blocks so that the blocks
  // are split over the threads (and a last partial block follows a split).
  const std::vector<std::vector<std::int64_t>> shapes = {{1},       {2},        {63},       {64},      {65},
                                                         {127},     {5, 33},    {3, 7, 11}, {7, 64},   {13, 200},
                                                         {3, 4160}, {501, 257}, {1024, 65}, {700, 777}};
  std::uint64_t seed = 0;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& shape : shapes) {
      std::int64_t n = 1;
      for (std::int64_t d : shape) n *= d;
      const at::Tensor x = stress_weight(n, dtype, ++seed).view(shape);
      SCOPED_TRACE(testing::Message() << c10::toString(dtype) << " " << x.sizes());
      expect_same_quantization(nf4_quantize(x), nf4_quantize_reference(x));
    }
  }
  // Whole weights of zeros or of subnormals: the offset is then 0 or tiny, so an absmax clamped where bnb keeps it
  // unclamped (or the reverse) shows in the 8-bit bytes.
  for (const at::Tensor& x : {at::zeros({3, 64}), at::zeros({130}), at::full({2, 70}, 1e-40), at::full({5}, -1e-40)}) {
    SCOPED_TRACE(testing::Message() << "constant " << x.sizes());
    expect_same_quantization(nf4_quantize(x), nf4_quantize_reference(x));
  }
  // A last partial block of values for which x / m and x * (1 / m) fall on different sides of a midpoint: bnb divides
  // there and multiplies by the reciprocal elsewhere.
  for (float m : {3.7f, 0.013f, 7e-3f}) {
    SCOPED_TRACE(testing::Message() << "division probes, absmax " << m);
    const at::Tensor tail = division_probes(m);
    EXPECT_GT(tail.numel(), 1) << "no probe found";
    const at::Tensor x = at::cat({at::randn({128}) * m, tail});
    expect_same_quantization(nf4_quantize(x), nf4_quantize_reference(x));
  }
  // A non-contiguous weight (a transposed view) is quantized in its logical order, as the reference does.
  const at::Tensor t = stress_weight(96 * 130, at::kBFloat16, 99).view({96, 130}).t();
  expect_same_quantization(nf4_quantize(t), nf4_quantize_reference(t));
}

TEST(Nf4, CpuDequantizeEqualsReference) {
  const ThreadCount threads(3);
  // Odd and multi-thread sizes; a weight's own quant_map (a checkpoint's) is what the loop reads, so a scaled one must
  // come through as well.
  std::uint64_t seed = 50;
  for (const std::vector<std::int64_t>& shape :
       std::vector<std::vector<std::int64_t>>{{1}, {63}, {65}, {5, 33}, {3, 7, 11}, {700, 777}}) {
    for (at::ScalarType in : {at::kFloat, at::kBFloat16}) {
      std::int64_t n = 1;
      for (std::int64_t d : shape) n *= d;
      Nf4Weight w = nf4_quantize(stress_weight(n, in, ++seed).view(shape));
      for (at::ScalarType out : {at::kFloat, at::kBFloat16, at::kHalf}) {
        SCOPED_TRACE(testing::Message() << at::IntArrayRef(shape) << " " << c10::toString(in) << " -> "
                                        << c10::toString(out));
        EXPECT_TRUE(same_bits(nf4_dequantize(w, out), nf4_dequantize_reference(w, out)));
      }
      w.quant_map = w.quant_map * 1.37;
      EXPECT_TRUE(same_bits(nf4_dequantize(w), nf4_dequantize_reference(w, w.dtype))) << "scaled quant_map";
    }
  }
}

TEST(Nf4, CpuPassRefusesNonFiniteAnywhere) {
  const ThreadCount threads(3);
  // In the first block, in the last thread's range and in the last partial block.
  for (std::int64_t at : {std::int64_t{0}, std::int64_t{7000 * 64 + 5}, std::int64_t{8000 * 64 + 30}}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      at::Tensor x = at::randn({8000 * 64 + 31});
      x[at] = bad;
      EXPECT_THROW(nf4_quantize(x), UsageError) << at << " " << bad;
      EXPECT_THROW(nf4_quantize(x.to(at::kBFloat16)), UsageError) << at << " " << bad;
    }
  }
}

TEST(Nf4, RoundTripIsClose) {
  // The test above could pass on a broken fixture; a real 4-bit code keeps a Gaussian weight within ~10%.
  at::manual_seed(5);
  const at::Tensor x = at::randn({96, 200}).to(at::kBFloat16);
  const at::Tensor y = nf4_dequantize(nf4_quantize(x));
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(y.sizes(), x.sizes());
  const double err = test::rel_error(y, x);
  EXPECT_GT(err, 0.01);
  EXPECT_LT(err, 0.12);
  EXPECT_TRUE(same_bits(nf4_dequantize(nf4_quantize(x), at::kFloat).to(at::kBFloat16), y));
}

TEST(Nf4, RefusesWhatItCannotHold) {
  EXPECT_THROW(nf4_quantize(at::zeros({0, 64})), LibraryError);
  EXPECT_THROW(nf4_quantize(at::zeros({}, at::kFloat)), LibraryError);
  EXPECT_THROW(nf4_quantize(at::zeros({4, 64}, at::kInt)), LibraryError);
  EXPECT_THROW(nf4_quantize(at::zeros({4, 64}, at::kDouble)), LibraryError);
  at::Tensor bad = at::randn({4, 64});
  bad[2][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(nf4_quantize(bad), UsageError);
  bad[2][3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(nf4_quantize(bad), UsageError);

  Nf4Weight w = nf4_quantize(at::randn({4, 128}));
  EXPECT_NO_THROW(nf4_check(w));
  Nf4Weight short_absmax = w;
  short_absmax.absmax = w.absmax.slice(0, 1);
  try {
    nf4_dequantize(short_absmax);
    ADD_FAILURE() << "accepted an absmax of the wrong size";
  } catch (const LibraryError& e) {
    EXPECT_NE(std::string(e.what()).find("absmax"), std::string::npos) << e.what();
  }
  Nf4Weight wrong_shape = w;
  wrong_shape.shape = {4, 129};
  EXPECT_THROW(nf4_dequantize(wrong_shape), LibraryError);
  Nf4Weight wrong_type = w;
  wrong_type.nested_absmax = w.nested_absmax.to(at::kDouble);
  EXPECT_THROW(nf4_dequantize(wrong_type), LibraryError);
  EXPECT_THROW(nf4_dequantize(w, at::kInt), LibraryError);
}

}  // namespace
}  // namespace ranktune
