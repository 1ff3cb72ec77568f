// NF4 against bitsandbytes 0.50 on CPU (tests/reference/make_nf4_fixtures.py): for every committed case (bf16, fp16,
// fp32; odd shapes, ties on the code midpoints, zero and equal blocks, extreme magnitudes, fixture-model weights) the
// quantization is byte-identical (packed codes, 8-bit absmaxes, nested absmaxes, offset, code tables, the quant-state
// JSON, transformers' tensor names) and the dequantization of bnb's own tensors equals bnb's bit for bit.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <string>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/kernels/nf4.h"
#include "ranktune/model/safetensors.h"

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
::testing::AssertionResult same_bits(const at::Tensor& ours, const at::Tensor& ref) {
  if (ours.scalar_type() != ref.scalar_type() || ours.sizes() != ref.sizes())
    return ::testing::AssertionFailure() << "dtype/shape " << ours.scalar_type() << ours.sizes() << " vs "
                                         << ref.scalar_type() << ref.sizes();
  const at::Tensor a = ours.contiguous().view(-1).view(at::kByte), b = ref.contiguous().view(-1).view(at::kByte);
  if (std::memcmp(a.data_ptr(), b.data_ptr(), a.numel()) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << at::ne(a, b).sum().item<std::int64_t>() << " of " << a.numel()
                                       << " bytes differ";
}

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
