// rope_rotate as an autograd op: on CPU its values and gradients equal transformers' composition exactly (fp64 and
// fp32, [1, T] and [B, T] tables, a transposed view as q arrives from its projection), and on a GPU the fused kernel
// matches an fp64 reference in fp32 and bf16 for strided views and keeps their layout (skipped without a GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "ranktune/kernels/rope.h"
#include "ranktune/model/rope.h"

namespace ranktune {
namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() / b.to(at::kDouble).norm().item<double>();
}

at::Tensor rotate_half(const at::Tensor& x) {
  const std::int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Tables as the model makes them: cos/sin of cat(freqs, freqs) for real positions.
std::pair<at::Tensor, at::Tensor> tables(std::int64_t batch, std::int64_t seq, std::int64_t dim, at::ScalarType dt) {
  LlamaConfig c;
  c.head_dim = dim;
  c.rope_theta = 10000;
  const at::Tensor pos = at::arange(seq, at::kLong).unsqueeze(0).repeat({batch, 1}) +
                         7 * at::arange(batch).unsqueeze(1);
  const RopeCache r = Rope(c).tables(pos, dt);
  return {r.cos, r.sin};
}

// q as the attention makes it: a [B, T, H, D] projection output viewed as [B, H, T, D].
at::Tensor strided_q(std::int64_t b, std::int64_t h, std::int64_t t, std::int64_t d, at::TensorOptions o) {
  return at::randn({b, t, h, d}, o).transpose(1, 2);
}

TEST(Rope, CpuEqualsTransformersCompositionExactly) {
  at::manual_seed(5);
  for (auto dt : {at::kDouble, at::kFloat}) {
    for (std::int64_t table_batch : {1, 3}) {
      const auto [cos, sin] = tables(table_batch, 11, 16, dt);
      const at::Tensor x0 = strided_q(3, 4, 11, 16, at::TensorOptions().dtype(dt));
      const at::Tensor w = at::randn({3, 4, 11, 16}, at::TensorOptions().dtype(dt));
      at::Tensor x1 = x0.detach().clone().set_requires_grad(true), x2 = x0.detach().clone().set_requires_grad(true);
      const at::Tensor ours = rope_rotate(x1, cos, sin);
      const at::Tensor ref = x2 * cos.unsqueeze(1) + rotate_half(x2) * sin.unsqueeze(1);
      EXPECT_TRUE(at::equal(ours, ref)) << dt << " table batch " << table_batch;
      (ours * w).sum().backward();
      (ref * w).sum().backward();
      EXPECT_TRUE(at::equal(x1.grad(), x2.grad())) << dt << " table batch " << table_batch;
    }
  }
}

TEST(Rope, BackwardIsTheTransposeOfTheRotation) {
  // <R x, g> == <x, R^T g> for the raw directions, with tables whose halves differ (the general formula).
  at::manual_seed(9);
  const at::Tensor x = at::randn({2, 3, 5, 8}, at::kDouble), g = at::randn({2, 3, 5, 8}, at::kDouble);
  const at::Tensor cos = at::randn({2, 5, 8}, at::kDouble), sin = at::randn({2, 5, 8}, at::kDouble);
  const double lhs = (rope_rotate_forward(x, cos, sin) * g).sum().item<double>();
  const double rhs = (x * rope_rotate_backward(g, cos, sin)).sum().item<double>();
  EXPECT_NEAR(lhs, rhs, 1e-10 * std::abs(lhs));
}

TEST(Rope, RejectsBadShapes) {
  const auto [cos, sin] = tables(1, 4, 8, at::kFloat);
  EXPECT_ANY_THROW(rope_rotate(at::zeros({2, 3, 5, 8}), cos, sin));               // T differs
  EXPECT_ANY_THROW(rope_rotate(at::zeros({2, 3, 4, 8}, at::kDouble), cos, sin));  // dtype differs
  EXPECT_ANY_THROW(rope_rotate(at::zeros({3, 4, 8}), cos, sin));                  // not 4-d
}

TEST(Rope, CudaKernelMatchesFp64Reference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(13);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (std::int64_t table_batch : {1, 2}) {
      const auto o = at::TensorOptions(at::kCUDA).dtype(dt);
      // TinyLlama's head_dim, an odd sequence length, q as a transposed view and a contiguous gradient.
      const at::Tensor x = strided_q(2, 32, 333, 64, o), g = at::randn({2, 32, 333, 64}, o);
      // One element into its storage: no 16-byte loads, the element-by-element form.
      const at::Tensor x_odd =
          at::randn({2 * 32 * 333 * 64 + 1}, o).narrow(0, 1, 2 * 32 * 333 * 64).view({2, 32, 333, 64});
      auto [cos, sin] = tables(table_batch, 333, 64, dt);
      cos = cos.cuda();
      sin = sin.cuda();
      const at::Tensor xr = x.cpu().to(at::kDouble), gr = g.cpu().to(at::kDouble);
      const at::Tensor cr = cos.cpu().to(at::kDouble).unsqueeze(1), sr = sin.cpu().to(at::kDouble).unsqueeze(1);
      const double tol = dt == at::kFloat ? 1e-6 : 1e-2;
      const at::Tensor y = rope_rotate_forward(x, cos, sin);
      EXPECT_EQ(y.strides(), x.strides()) << "the output keeps the view's layout";
      EXPECT_LT(rel_err(y.cpu(), xr * cr + rotate_half(xr) * sr), tol) << dt;
      const at::Tensor xr_odd = x_odd.cpu().to(at::kDouble);
      EXPECT_LT(rel_err(rope_rotate_forward(x_odd, cos, sin).cpu(), xr_odd * cr + rotate_half(xr_odd) * sr), tol) << dt;
      const at::Tensor dx = rope_rotate_backward(g, cos, sin);
      const at::Tensor gs = gr * sr;
      const std::int64_t h = gs.size(-1) / 2;
      const at::Tensor ref_dx = gr * cr + at::cat({gs.narrow(-1, h, h), -gs.narrow(-1, 0, h)}, -1);
      EXPECT_LT(rel_err(dx.cpu(), ref_dx), tol) << dt;
    }
  }
}

}  // namespace
}  // namespace ranktune
