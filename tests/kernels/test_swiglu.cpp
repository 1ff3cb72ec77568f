// swiglu as an autograd op: values and gradients equal the unfused composition silu(g) * u (fp64, CPU), and on a
// GPU the fused kernels match an fp64 reference in fp32 and bf16 (skipped where no GPU is visible).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "ranktune/kernels/swiglu.h"

namespace ranktune {
namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() / b.to(at::kDouble).norm().item<double>();
}

TEST(SwiGLU, CpuMatchesCompositionWithGradients) {
  at::manual_seed(3);
  const at::Tensor g0 = at::randn({7, 33}, at::kDouble) * 3, u0 = at::randn({7, 33}, at::kDouble);
  const at::Tensor w = at::randn({7, 33}, at::kDouble);
  at::Tensor g1 = g0.clone().set_requires_grad(true), u1 = u0.clone().set_requires_grad(true);
  at::Tensor g2 = g0.clone().set_requires_grad(true), u2 = u0.clone().set_requires_grad(true);
  const at::Tensor ours = swiglu(g1, u1);
  const at::Tensor ref = at::silu(g2) * u2;
  EXPECT_LT(rel_err(ours, ref), 1e-14);
  (ours * w).sum().backward();
  (ref * w).sum().backward();
  EXPECT_LT(rel_err(g1.grad(), g2.grad()), 1e-12);
  EXPECT_LT(rel_err(u1.grad(), u2.grad()), 1e-12);
}

TEST(SwiGLU, RejectsMismatchedInputs) {
  EXPECT_ANY_THROW(swiglu(at::zeros({2, 3}), at::zeros({3, 2})));
  EXPECT_ANY_THROW(swiglu(at::zeros({2}), at::zeros({2}, at::kDouble)));
}

TEST(SwiGLU, CudaKernelsMatchFp64Reference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(11);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    // An odd size so the grid-stride tail is exercised; values wide enough to reach both sigmoid tails.
    const at::Tensor g = (at::randn({3, 1000003}, at::kDouble) * 4), u = at::randn({3, 1000003}, at::kDouble);
    const at::Tensor dy = at::randn({3, 1000003}, at::kDouble);
    const auto opt = at::TensorOptions(at::kCUDA).dtype(dtype);
    const at::Tensor gd = g.to(opt), ud = u.to(opt), dyd = dy.to(opt);
    // Reference from the same rounded inputs, in fp64.
    const at::Tensor gr = gd.cpu().to(at::kDouble), ur = ud.cpu().to(at::kDouble), dyr = dyd.cpu().to(at::kDouble);
    const at::Tensor s = at::sigmoid(gr);
    const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
    at::Tensor out = at::full_like(gd, std::numeric_limits<float>::quiet_NaN());
    out = swiglu_forward(gd, ud);
    EXPECT_FALSE(out.isnan().any().item<bool>());
    EXPECT_LT(rel_err(out.cpu(), gr * s * ur), tol) << dtype;
    auto [dg, du] = swiglu_backward(dyd, gd, ud);
    EXPECT_LT(rel_err(dg.cpu(), dyr * ur * s * (1 + gr * (1 - s))), tol) << dtype;
    EXPECT_LT(rel_err(du.cpu(), dyr * gr * s), tol) << dtype;
  }
}

TEST(SwiGLU, CudaKernelsTakeMisalignedViews) {
  // A view one element into its storage is not 16-byte aligned: the kernels must take it element by element.
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(12);
  const auto opt = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor g = at::randn({4097}, opt).narrow(0, 1, 4096), u = at::randn({4097}, opt).narrow(0, 1, 4096);
  const at::Tensor dy = at::randn({4097}, opt).narrow(0, 1, 4096);
  const at::Tensor gr = g.cpu().to(at::kDouble), ur = u.cpu().to(at::kDouble), dyr = dy.cpu().to(at::kDouble);
  const at::Tensor s = at::sigmoid(gr);
  EXPECT_LT(rel_err(swiglu_forward(g, u).cpu(), gr * s * ur), 1e-2);
  auto [dg, du] = swiglu_backward(dy, g, u);
  EXPECT_LT(rel_err(dg.cpu(), dyr * ur * s * (1 + gr * (1 - s))), 1e-2);
  EXPECT_LT(rel_err(du.cpu(), dyr * gr * s), 1e-2);
}

}  // namespace
}  // namespace ranktune
