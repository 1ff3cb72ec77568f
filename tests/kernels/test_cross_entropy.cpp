// cross_entropy_rows_: the ATen reference against log_softmax in fp64 (CPU), and on a GPU the kernel against the
// reference on the same device in fp32, bf16 and fp16, for packed and element-wise rows, ignored and out-of-range
// targets and strided rows (skipped where no GPU is visible).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "ranktune/kernels/cross_entropy.h"

namespace ranktune {
namespace {

constexpr std::int64_t kIgnore = -100;

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() /
         std::max(b.to(at::kDouble).norm().item<double>(), 1e-300);
}

// Targets in [0, vocab) with every third row ignored.
at::Tensor some_targets(std::int64_t rows, std::int64_t vocab, const at::TensorOptions& opt) {
  at::Tensor t = at::randint(vocab, {rows}, at::kLong);
  t.index_put_({at::arange(0, rows, 3)}, kIgnore);
  return t.to(opt.device());
}

// Loss and gradient in fp64 from the same (rounded) logits: -log_softmax at the target, softmax - one-hot.
std::pair<at::Tensor, at::Tensor> fp64_expected(const at::Tensor& logits, const at::Tensor& targets) {
  const at::Tensor z = logits.cpu().to(at::kDouble), t = targets.cpu();
  const at::Tensor valid = t != kIgnore;
  const at::Tensor safe = at::where(valid, t, at::zeros({}, t.options()));
  const at::Tensor logp = at::log_softmax(z, 1);
  const at::Tensor loss = at::where(valid, -logp.gather(1, safe.unsqueeze(1)).squeeze(1), at::zeros({}, z.options()));
  at::Tensor grad = logp.exp() - at::one_hot(safe, z.size(1)).to(at::kDouble);
  grad.mul_(valid.unsqueeze(1));
  return {loss, grad};
}

TEST(CrossEntropyRows, ReferenceMatchesLogSoftmaxInFp64) {
  at::manual_seed(5);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor logits = (at::randn({37, 259}) * 4).to(dtype);
    const at::Tensor targets = some_targets(37, 259, at::TensorOptions());
    auto [want_loss, want_grad] = fp64_expected(logits, targets);
    at::Tensor z = logits.clone();
    const at::Tensor loss = cross_entropy_rows_reference_(z, targets, kIgnore, /*grad=*/true);
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_LT(rel_err(loss, want_loss), 1e-6) << dtype;
    EXPECT_EQ(z.scalar_type(), dtype);
    EXPECT_LT(rel_err(z, want_grad), dtype == at::kFloat ? 1e-6 : 4e-3) << dtype;
    // Ignored rows: zero loss, zero gradient.
    EXPECT_TRUE(at::all(loss.index({at::arange(0, 37, 3)}) == 0).item<bool>());
    EXPECT_TRUE(at::all(z.index({at::arange(0, 37, 3)}) == 0).item<bool>());
    // Without the gradient the logits are untouched.
    at::Tensor kept = logits.clone();
    EXPECT_TRUE(at::equal(cross_entropy_rows_reference_(kept, targets, kIgnore, false), loss));
    EXPECT_TRUE(at::equal(kept, logits));
  }
}

TEST(CrossEntropyRows, CpuDispatchIsTheReference) {
  at::manual_seed(6);
  const at::Tensor logits = at::randn({9, 40});
  const at::Tensor targets = some_targets(9, 40, at::TensorOptions());
  at::Tensor a = logits.clone(), b = logits.clone();
  EXPECT_TRUE(at::equal(cross_entropy_rows_(a, targets, kIgnore, true),
                        cross_entropy_rows_reference_(b, targets, kIgnore, true)));
  EXPECT_TRUE(at::equal(a, b));
}

TEST(CrossEntropyRows, RejectsBadShapes) {
  at::Tensor z = at::zeros({4, 8});
  EXPECT_ANY_THROW(cross_entropy_rows_(z, at::zeros({3}, at::kLong), kIgnore, true));
  EXPECT_ANY_THROW(cross_entropy_rows_(z, at::zeros({4}, at::kInt), kIgnore, true));
  at::Tensor t = at::zeros({8, 4}).t();
  EXPECT_ANY_THROW(cross_entropy_rows_(t, at::zeros({4}, at::kLong), kIgnore, true));
}

TEST(CrossEntropyRows, CudaKernelMatchesTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(7);
  // 32000 and 128256 (packed rows, 256 and 512 threads), 259 and 1001 (element by element).
  for (std::int64_t vocab : {32000, 128256, 259, 1001}) {
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const auto opt = at::TensorOptions(at::kCUDA).dtype(dtype);
      const std::int64_t rows = 67;
      const at::Tensor logits = (at::randn({rows, vocab}) * 3).to(opt);
      const at::Tensor targets = some_targets(rows, vocab, opt);
      at::Tensor ours = logits.clone(), ref = logits.clone();
      const at::Tensor loss = cross_entropy_rows_(ours, targets, kIgnore, true);
      const at::Tensor want = cross_entropy_rows_reference_(ref, targets, kIgnore, true);
      EXPECT_LT(rel_err(loss.cpu(), want.cpu()), 1e-6) << vocab << " " << dtype;
      EXPECT_EQ(ours.scalar_type(), dtype);
      EXPECT_FALSE(ours.isnan().any().item<bool>());
      // Each gradient within one rounding of the storage dtype of the reference's (both round an fp32 value).
      const double tol = dtype == at::kFloat ? 1e-6 : 1e-3;
      EXPECT_LT(rel_err(ours.cpu(), ref.cpu()), tol) << vocab << " " << dtype;
      EXPECT_TRUE(at::all(ours.index({at::arange(0, rows, 3)}) == 0).item<bool>()) << vocab << " " << dtype;
      // Against fp64 as well, so that a shared mistake in both paths cannot pass.
      auto [want_loss, want_grad] = fp64_expected(logits, targets);
      EXPECT_LT(rel_err(loss.cpu(), want_loss), 1e-5) << vocab << " " << dtype;
      EXPECT_LT(rel_err(ours.cpu(), want_grad), dtype == at::kFloat ? 1e-5 : 4e-3) << vocab << " " << dtype;
      // The loss alone leaves the logits untouched.
      at::Tensor kept = logits.clone();
      EXPECT_LT(rel_err(cross_entropy_rows_(kept, targets, kIgnore, false).cpu(), want.cpu()), 1e-6);
      EXPECT_TRUE(at::equal(kept, logits));
    }
  }
}

TEST(CrossEntropyRows, CudaKernelTakesStridedRowsAndBadTargets) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(8);
  const auto opt = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  // Rows of 1000 inside rows of 1024: unit last stride, row stride 1024, packed loads.
  const at::Tensor wide = at::randn({16, 1024}).to(opt);
  at::Tensor view = wide.narrow(1, 0, 1000), copy = view.contiguous();
  at::Tensor targets = at::randint(1000, {16}, at::kLong).to(at::kCUDA);
  const at::Tensor a = cross_entropy_rows_(view, targets, kIgnore, true);
  const at::Tensor b = cross_entropy_rows_(copy, targets, kIgnore, true);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_TRUE(at::equal(view, copy));
  EXPECT_TRUE(at::equal(wide.narrow(1, 1000, 24).cpu(), wide.narrow(1, 1000, 24).cpu()));
  // A target outside the vocabulary (not the ignore index) gives a NaN loss, which the trainer reports.
  targets.index_put_({0}, 1000);
  at::Tensor z = at::randn({16, 1000}).to(opt);
  const at::Tensor loss = cross_entropy_rows_(z, targets, kIgnore, false).cpu();
  EXPECT_TRUE(std::isnan(loss[0].item<float>()));
  EXPECT_FALSE(loss.narrow(0, 1, 15).isnan().any().item<bool>());
}

}  // namespace
}  // namespace ranktune
