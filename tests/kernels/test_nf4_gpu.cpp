// NF4 on a GPU (skipped where none is visible): the CUDA dequantization kernel equals the CPU reference bit for bit
// (itself checked against bitsandbytes by test_nf4) for bf16, fp16 and fp32 outputs, over shapes that exercise the
// full-tile path, the partial last tile, partial absmax blocks, an odd element count and a misaligned packed view;
// and quantizing on the GPU gives the bytes the CPU gives.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstring>
#include <vector>

#include "ranktune/kernels/nf4.h"
#include "support/same_bits.h"

namespace ranktune {
namespace {

using test::same_bits;

const std::vector<std::vector<std::int64_t>> kShapes = {{5, 33},   {3, 50},      {7},        {1, 64},
                                                        {16, 80},  {1, 8192},    {1, 8193},  {3, 8256},
                                                        {257, 64}, {1024, 1024}, {512, 4160}};

// Gaussian rows with scales spread over decades, so that the nested absmax code is used over its range.
at::Tensor weight(const std::vector<std::int64_t>& shape, at::ScalarType dtype) {
  const at::Tensor x = at::randn(shape, at::kFloat);
  const at::Tensor scale = at::exp(at::randn({x.numel() / 64 + 1}) * 2).repeat_interleave(64).slice(0, 0, x.numel());
  return (x * scale.view(shape)).to(dtype);
}

TEST(Nf4Gpu, DequantizeKernelEqualsCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  at::manual_seed(7);
  for (auto in : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const auto& shape : kShapes) {
      SCOPED_TRACE(::testing::Message() << in << at::IntArrayRef(shape));
      const Nf4Weight q = nf4_quantize(weight(shape, in));
      const Nf4Weight g = q.to(at::Device(at::kCUDA, 0));
      for (auto out : {at::kBFloat16, at::kHalf, at::kFloat}) {
        const at::Tensor d = nf4_dequantize(g, out);
        EXPECT_TRUE(d.is_cuda());
        EXPECT_TRUE(same_bits(d, nf4_dequantize(q, out))) << "out " << out;
      }
    }
  }
}

TEST(Nf4Gpu, MisalignedPackedViewIsHandled) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  at::manual_seed(8);
  const Nf4Weight q = nf4_quantize(weight({64, 1024}, at::kBFloat16));
  Nf4Weight g = q.to(at::Device(at::kCUDA, 0));
  const at::Tensor buffer = at::empty({g.packed.numel() + 1}, g.packed.options());
  buffer.slice(0, 1).copy_(g.packed.view(-1));
  g.packed = buffer.slice(0, 1).view({-1, 1});
  EXPECT_TRUE(same_bits(nf4_dequantize(g), nf4_dequantize(q)));
}

TEST(Nf4Gpu, QuantizeOnGpuEqualsCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  at::manual_seed(9);
  for (const auto& shape : kShapes) {
    SCOPED_TRACE(::testing::Message() << at::IntArrayRef(shape));
    const at::Tensor x = weight(shape, at::kBFloat16);
    const Nf4Weight c = nf4_quantize(x);
    const Nf4Weight g = nf4_quantize(x.cuda());
    EXPECT_TRUE(g.packed.is_cuda());
    EXPECT_TRUE(same_bits(g.packed, c.packed));
    EXPECT_TRUE(same_bits(g.absmax, c.absmax));
    EXPECT_TRUE(same_bits(g.nested_absmax, c.nested_absmax));
    EXPECT_EQ(g.offset, c.offset);
  }
}

}  // namespace
}  // namespace ranktune
