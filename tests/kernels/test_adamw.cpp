// The one-pass AdamW step for low-precision parameters (kernels/adamw.h) against its reference: an fp32 copy of the
// gradient, at::_fused_adamw_ on the fp32 master, the master copied back into the parameter. On the CPU the two agree
// to fp32 rounding (torch's CPU kernel orders the arithmetic its own way); on a GPU the kernel does torch's CUDA
// arithmetic and must agree bit for bit (skipped where no GPU is visible). The optimizer-level test against
// torch.optim.AdamW is tests/train/test_optimizer.cpp (one_pass).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/kernels/adamw.h"

namespace ranktune {
namespace {

struct State {
  at::Tensor param, master, exp_avg, exp_avg_sq, step;
};

// A parameter of `n` elements at `offset` elements into its storage (offset 1: misaligned for vector loads), with
// its master, moments (non-zero, as after earlier steps) and step count.
State make_state(std::int64_t n, at::ScalarType dtype, const at::Device& device, std::int64_t offset = 0) {
  State s;
  const auto f32 = at::TensorOptions(device).dtype(at::kFloat);
  s.master = at::randn({n}, f32);
  s.param = at::empty({n + offset}, f32.dtype(dtype)).slice(0, offset, n + offset);
  s.param.copy_(s.master);
  s.exp_avg = at::randn({n}, f32) * 1e-2;
  s.exp_avg_sq = at::rand({n}, f32) * 1e-4;
  s.step = at::full({}, 4.0, f32);
  return s;
}

State clone(const State& s) {
  return {s.param.clone(), s.master.clone(), s.exp_avg.clone(), s.exp_avg_sq.clone(), s.step.clone()};
}

void one_pass(State& s, const at::Tensor& grad, const AdamWHyper& h) {
  at::_foreach_add_(at::TensorList{s.step}, 1);
  adamw_master_step({s.param}, {grad}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h);
}

void reference(State& s, const at::Tensor& grad, const AdamWHyper& h) {
  at::_foreach_add_(at::TensorList{s.step}, 1);
  at::_fused_adamw_({s.master}, {grad.to(at::kFloat)}, {s.exp_avg}, {s.exp_avg_sq}, {}, {s.step}, h.lr, h.beta1,
                    h.beta2, h.weight_decay, h.eps, false, false);
  s.param.copy_(s.master);
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

std::int64_t differing(const at::Tensor& a, const at::Tensor& b) {
  return at::ne(a.cpu().view(-1).view(at::kByte), b.cpu().view(-1).view(at::kByte)).sum().item<std::int64_t>();
}

const std::vector<std::int64_t> kSizes = {1, 3, 4, 7, 4096, 4099, 65536 * 3 + 5};

void run_steps(const at::Device& device, bool exact) {
  at::manual_seed(5);
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (double wd : {0.0, 0.1})
      for (std::int64_t n : kSizes)
        for (std::int64_t offset : {0, 1}) {
          SCOPED_TRACE(::testing::Message() << dtype << " n " << n << " wd " << wd << " offset " << offset);
          State ours = make_state(n, dtype, device, offset), ref = clone(ours);
          const at::Tensor start = ours.master.clone();
          const AdamWHyper h{5e-2, 0.9, 0.95, 1e-8, wd};
          for (int i = 0; i < 3; ++i) {
            const at::Tensor g = (at::randn({n}, at::TensorOptions(device)) * 1e-2).to(dtype);
            one_pass(ours, g, h);
            reference(ref, g, h);
          }
          if (exact) {
            EXPECT_EQ(differing(ours.master, ref.master), 0);
            EXPECT_EQ(differing(ours.exp_avg, ref.exp_avg), 0);
            EXPECT_EQ(differing(ours.exp_avg_sq, ref.exp_avg_sq), 0);
            EXPECT_EQ(differing(ours.param.contiguous(), ref.param.contiguous()), 0);
          } else {
            // The updates themselves (not only the weights they land on) agree to fp32 rounding of the weights.
            EXPECT_LE(max_rel(ours.master - start, ref.master - start), 2e-5);
            EXPECT_LE(max_rel(ours.master, ref.master), 1e-6);
            EXPECT_LE(max_rel(ours.exp_avg, ref.exp_avg), 1e-6);
            EXPECT_LE(max_rel(ours.exp_avg_sq, ref.exp_avg_sq), 1e-6);
          }
          // The parameter is its master rounded, whatever the device.
          EXPECT_EQ(differing(ours.param.contiguous(), ours.master.to(dtype)), 0);
          EXPECT_EQ(ours.step.item<float>(), 7.0f);
        }
}

TEST(AdamWOnePass, CpuAgreesWithTheReference) { run_steps(at::Device(at::kCPU), /*exact=*/false); }

TEST(AdamWOnePass, CudaEqualsTheReferenceBitForBit) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  run_steps(at::Device(at::kCUDA, 0), /*exact=*/true);
}

// grad_scale folded into the kernel's read of the gradient equals `grad.mul_(scale)` followed by the unscaled step,
// bit for bit, on the CPU and on a GPU (each device rounds the product as ATen's mul_ does there).
void scaled_equals_mul_then_step(const at::Device& device) {
  at::manual_seed(6);
  const auto f32 = at::TensorOptions(device).dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (float scale : {0.3137f, 1.0f, 1e-3f})
      for (std::int64_t n : kSizes)
        for (std::int64_t offset : {0, 1}) {
          SCOPED_TRACE(::testing::Message() << dtype << " n " << n << " scale " << scale << " offset " << offset);
          State ours = make_state(n, dtype, device, offset), ref = clone(ours);
          const AdamWHyper h{5e-2, 0.9, 0.95, 1e-8, 0.1};
          const at::Tensor coef = at::full({}, scale, f32);
          for (int i = 0; i < 3; ++i) {
            const at::Tensor g = (at::randn({n}, f32) * 3).to(dtype);
            at::_foreach_add_(at::TensorList{ours.step}, 1);
            adamw_master_step({ours.param}, {g}, {ours.master}, {ours.exp_avg}, {ours.exp_avg_sq}, {ours.step}, h,
                              coef);
            at::Tensor clipped = g.clone();
            clipped.mul_(coef);
            one_pass(ref, clipped, h);
          }
          EXPECT_EQ(differing(ours.master, ref.master), 0);
          EXPECT_EQ(differing(ours.exp_avg, ref.exp_avg), 0);
          EXPECT_EQ(differing(ours.exp_avg_sq, ref.exp_avg_sq), 0);
          EXPECT_EQ(differing(ours.param.contiguous(), ref.param.contiguous()), 0);
        }
}

TEST(AdamWOnePass, CpuGradScaleEqualsMulThenStep) { scaled_equals_mul_then_step(at::Device(at::kCPU)); }

TEST(AdamWOnePass, CudaGradScaleEqualsMulThenStep) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  scaled_equals_mul_then_step(at::Device(at::kCUDA, 0));
}

// Several tensors of mixed sizes in one call, as the optimizer passes them: each gets its own step count.
TEST(AdamWOnePass, ListsStepEachTensorWithItsOwnCount) {
  at::manual_seed(6);
  State a = make_state(10, at::kBFloat16, at::Device(at::kCPU)), b = make_state(33, at::kBFloat16, at::kCPU);
  b.step.fill_(0);
  State a_ref = clone(a), b_ref = clone(b);
  const at::Tensor ga = at::randn({10}).to(at::kBFloat16), gb = at::randn({33}).to(at::kBFloat16);
  const AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, 0.0};
  at::_foreach_add_(at::TensorList{a.step, b.step}, 1);
  adamw_master_step({a.param, b.param}, {ga, gb}, {a.master, b.master}, {a.exp_avg, b.exp_avg},
                    {a.exp_avg_sq, b.exp_avg_sq}, {a.step, b.step}, h);
  reference(a_ref, ga, h);
  reference(b_ref, gb, h);
  EXPECT_LE(max_rel(a.master, a_ref.master), 1e-6);
  EXPECT_LE(max_rel(b.master, b_ref.master), 1e-6);
  // Counts 5 and 1: their bias corrections differ by far more than the tolerance, so a shared count would show.
  EXPECT_EQ(a.step.item<float>(), 5.0f);
  EXPECT_EQ(b.step.item<float>(), 1.0f);
}

TEST(AdamWOnePass, RefusesWhatItCannotStep) {
  const State s = make_state(8, at::kBFloat16, at::kCPU);
  const AdamWHyper h;
  const at::Tensor g = at::zeros({8}, at::kBFloat16);
  EXPECT_THROW(adamw_master_step({s.param}, {g.to(at::kHalf)}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h),
               LibraryError);
  EXPECT_THROW(adamw_master_step({s.master}, {g}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h), LibraryError);
  EXPECT_THROW(adamw_master_step({s.param}, {g}, {s.master.to(at::kDouble)}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h),
               LibraryError);
  EXPECT_THROW(adamw_master_step({s.param}, {g}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {}, h), LibraryError);
  const at::Tensor strided = at::zeros({16}, at::kBFloat16).slice(0, 0, 16, 2);
  EXPECT_THROW(adamw_master_step({strided}, {g}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h), LibraryError);
  EXPECT_THROW(adamw_master_step({s.param}, {g}, {s.master}, {s.exp_avg}, {s.exp_avg_sq}, {s.step}, h, at::ones({2})),
               LibraryError);
}

}  // namespace
}  // namespace ranktune
