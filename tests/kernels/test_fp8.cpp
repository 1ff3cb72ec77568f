// FP8 e4m3 row-wise quantization and matmul (kernels/fp8.h). CPU: the reference by hand (scales, exact codes, a row
// of zeros), its rounding bound on random rows, the column form's layout and scales, and the matmul exact where every
// product is representable and within e4m3's error of the 16-bit product otherwise. GPU (skipped where none is
// visible): the row and column kernels equal the reference bit for bit over shapes that take the vector path, the
// element path, strided rows and partial tiles; at::_scaled_mm equals the fp32 reference within bf16 rounding.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstring>
#include <utility>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/kernels/fp8.h"
#include "support/same_bits.h"

namespace ranktune {
namespace {

using test::same_bits;

at::Tensor dequantized(const Fp8Rows& r) { return r.q.to(at::kFloat) * r.scale; }

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return ((got.to(at::kDouble) - want.to(at::kDouble)).norm() / want.to(at::kDouble).norm()).item<double>();
}

// Rows whose magnitudes spread over decades, so that each row's scale differs.
at::Tensor spread(std::int64_t rows, std::int64_t cols, at::ScalarType dtype) {
  return (at::randn({rows, cols}) * at::exp(at::randn({rows, 1}) * 3)).to(dtype);
}

TEST(Fp8, RowsByHand) {
  const at::Tensor x = at::tensor({1.f, -2.f, 0.5f, 4.f, 0.f, 0.f, 0.f, 0.f}).view({2, 4});
  const Fp8Rows r = fp8_quantize_rows(x);
  ASSERT_EQ(r.q.scalar_type(), at::kFloat8_e4m3fn);
  ASSERT_EQ(r.q.sizes(), at::IntArrayRef({2, 4}));
  ASSERT_EQ(r.scale.sizes(), at::IntArrayRef({2, 1}));
  EXPECT_EQ(r.scale[0][0].item<float>(), 4.f / 448.f);  // amax / 448
  EXPECT_EQ(r.scale[1][0].item<float>(), 1.f);          // a row of zeros keeps scale 1
  // 1, -2, 0.5, 4 over 4/448 are 112, -224, 56, 448: all e4m3 values, so the codes are exact.
  const std::vector<float> want = {112, -224, 56, 448, 0, 0, 0, 0};
  const at::Tensor q = r.q.to(at::kFloat).contiguous();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q.data_ptr<float>()[i], want[i]) << i;
}

TEST(Fp8, RowsRoundWithinHalfAStep) {
  at::manual_seed(1);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor x = spread(37, 129, dtype);
    const Fp8Rows r = fp8_quantize_rows(x);
    const at::Tensor xf = x.to(at::kFloat), amax = xf.abs().amax({1}, true);
    EXPECT_TRUE(at::equal(r.scale, amax / 448.f)) << dtype;
    EXPECT_EQ(r.q.to(at::kFloat).abs().amax().item<float>(), 448.f) << "each row's maximum maps to 448";
    // e4m3 keeps 3 mantissa bits: a normal value rounds within 2^-4 of itself; below 2^-6 * scale the step is
    // 2^-9 * scale (subnormals), so the error is at most half of that.
    const at::Tensor err = (dequantized(r) - xf).abs();
    const at::Tensor bound = at::maximum(xf.abs() * 0.0625f, r.scale * 0.5f * 0.001953125f);
    EXPECT_TRUE(at::all(err <= bound * (1 + 1e-6f)).item<bool>()) << dtype;
  }
}

TEST(Fp8, ColumnsAreTheRowsOfTheTranspose) {
  at::manual_seed(2);
  const at::Tensor w = spread(24, 40, at::kBFloat16).t().contiguous();  // columns of spread magnitude: [40, 24]
  const Fp8Rows c = fp8_quantize_columns(w);
  ASSERT_EQ(c.q.sizes(), at::IntArrayRef({24, 40}));
  ASSERT_EQ(c.scale.sizes(), at::IntArrayRef({24, 1}));
  EXPECT_TRUE(at::equal(c.scale.view(-1), w.to(at::kFloat).abs().amax({0}) / 448.f));
  EXPECT_TRUE(same_bits(c.q, fp8_quantize_rows(w.t().contiguous()).q));
}

TEST(Fp8, MatmulIsExactWhereEveryProductIsRepresentable) {
  // Small integers are e4m3 values and power-of-two scales multiply exactly: the product equals at::mm's.
  at::manual_seed(3);
  const at::Tensor a = at::randint(-8, 9, {6, 32}).to(at::kFloat), b = at::randint(-8, 9, {5, 32}).to(at::kFloat);
  const Fp8Rows qa{a.to(at::kFloat8_e4m3fn), at::full({6, 1}, 0.25f)};
  const Fp8Rows qb{b.to(at::kFloat8_e4m3fn), at::full({5, 1}, 2.f)};
  EXPECT_TRUE(at::equal(fp8_rowwise_mm(qa, qb, at::kFloat), at::mm(a, b.t()) * 0.5f));
}

TEST(Fp8, MatmulIsWithinE4m3OfTheSixteenBitProduct) {
  at::manual_seed(4);
  const at::Tensor x = spread(64, 256, at::kBFloat16), w = at::randn({48, 256}).to(at::kBFloat16) * 0.05;
  const at::Tensor want = at::mm(x.to(at::kFloat), w.to(at::kFloat).t());
  const at::Tensor y = fp8_rowwise_mm(fp8_quantize_rows(x), fp8_quantize_rows(w), at::kBFloat16);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const double e = relative_error(y, want);
  EXPECT_LT(e, 0.05);  // two e4m3 roundings of random inputs: a few percent
  EXPECT_GT(e, 1e-3);  // and not the 16-bit product itself
  // dX = dY W through the column form equals the same product of the dequantized operands.
  const at::Tensor dy = spread(64, 48, at::kBFloat16);
  const Fp8Rows qdy = fp8_quantize_rows(dy), qwt = fp8_quantize_columns(w);
  const at::Tensor dx = fp8_rowwise_mm(qdy, qwt, at::kFloat);
  EXPECT_LT(relative_error(dx, at::mm(dy.to(at::kFloat), w.to(at::kFloat))), 0.05);
  EXPECT_TRUE(at::allclose(dx, at::mm(dequantized(qdy), dequantized(qwt).t()), 1e-5, 1e-6));
}

TEST(Fp8, RefusesWhatItCannotTake) {
  EXPECT_THROW(fp8_quantize_rows(at::ones({2, 3, 4})), LibraryError);
  EXPECT_THROW(fp8_quantize_rows(at::ones({2, 3}, at::kInt)), LibraryError);
  const Fp8Rows a = fp8_quantize_rows(at::ones({2, 8})), b = fp8_quantize_rows(at::ones({3, 4}));
  EXPECT_THROW(fp8_rowwise_mm(a, b, at::kFloat), LibraryError);
  EXPECT_TRUE(fp8_matmuls_supported(at::Device(at::kCPU)));
}

TEST(Fp8Gpu, RowKernelEqualsTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  at::manual_seed(5);
  // vector path (cols % 8 == 0), element path, a row of zeros, one long row, strided rows of a wider tensor.
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{1, 8},    {3, 5},     {17, 4096}, {5, 14336},
                                                                     {64, 100}, {1, 65536}, {300, 24}};
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const auto& [rows, cols] : shapes) {
      at::Tensor x = spread(rows, cols, dtype);
      if (rows > 2) x[1].zero_();
      const Fp8Rows ref = fp8_quantize_rows_reference(x);
      const Fp8Rows got = fp8_quantize_rows(x.cuda());
      EXPECT_TRUE(same_bits(got.q, ref.q)) << dtype << " " << rows << "x" << cols;
      EXPECT_TRUE(same_bits(got.scale, ref.scale)) << dtype << " " << rows << "x" << cols;
    }
    const at::Tensor wide = spread(9, 72, dtype);
    const at::Tensor view = wide.cuda().slice(1, 8, 72);  // rows 72 apart, 64 wide
    EXPECT_TRUE(same_bits(fp8_quantize_rows(view).q, fp8_quantize_rows_reference(wide.slice(1, 8, 72)).q)) << dtype;
  }
}

TEST(Fp8Gpu, ColumnKernelEqualsTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  at::manual_seed(6);
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{1, 1},       {33, 31},     {256, 64}, {257, 65},
                                                                     {1024, 4096}, {14336, 512}, {4, 1000}};
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const auto& [rows, cols] : shapes) {
      at::Tensor w = spread(cols, rows, dtype).t().contiguous();  // columns of spread magnitude
      if (cols > 2) w.select(1, 1).zero_();
      const Fp8Rows ref = fp8_quantize_columns_reference(w);
      const Fp8Rows got = fp8_quantize_columns(w.cuda());
      EXPECT_TRUE(same_bits(got.q, ref.q)) << dtype << " " << rows << "x" << cols;
      EXPECT_TRUE(same_bits(got.scale, ref.scale)) << dtype << " " << rows << "x" << cols;
    }
  }
}

TEST(Fp8Gpu, ScaledMatmulEqualsTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  if (!fp8_matmuls_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "FP8 matmuls need compute capability 8.9";
  at::manual_seed(7);
  const at::Tensor x = spread(256, 512, at::kBFloat16), w = at::randn({384, 512}).to(at::kBFloat16) * 0.05;
  const Fp8Rows qx = fp8_quantize_rows(x), qw = fp8_quantize_rows(w);
  const at::Tensor ref = fp8_rowwise_mm_reference(qx, qw, at::kFloat);
  const at::Tensor got = fp8_rowwise_mm({qx.q.cuda(), qx.scale.cuda()}, {qw.q.cuda(), qw.scale.cuda()}, at::kBFloat16);
  EXPECT_LT(relative_error(got.cpu(), ref), 4e-3);  // fp32 accumulation in another order, then bf16 rounding
  EXPECT_THROW(fp8_rowwise_mm({qx.q.cuda().slice(1, 0, 40).contiguous(), qx.scale.cuda()},
                              {qw.q.cuda().slice(1, 0, 40).contiguous(), qw.scale.cuda()}, at::kBFloat16),
               LibraryError);  // an inner size that is not a multiple of 16
}

}  // namespace
}  // namespace ranktune
