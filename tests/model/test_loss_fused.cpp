// The fused chunked linear cross entropy (linear_cross_entropy.h) against the unfused reference, token_loss_sum of
// at::linear: loss, dh and dW on CPU fp32 to ~1e-6 with ignored rows, an all-ignored chunk, chunk sizes that do not
// divide the rows, a frozen head, and no-grad evaluation; end to end, every parameter gradient of a tiny Llama (tied,
// untied, under LoRA); bf16 within tolerance; on a GPU (skipped without one), bf16 at a real vocabulary and the memory,
// and the softmax kernel against its ATen reference.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>

#include "model/model_test_util.h"
#include "ranktune/model/linear_cross_entropy.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

using test::rel_error;

struct Problem {
  at::Tensor h, w, t;
};

// h [n, d], w [v, d] drawn from a fixed generator; targets in [0, v) with every third row and rows [8, 16) ignored.
Problem problem(std::int64_t n, std::int64_t d, std::int64_t v, at::ScalarType dtype = at::kFloat,
                at::Device dev = at::kCPU) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  Problem p;
  p.h = at::empty({n, d}, at::kFloat).normal_(0, 1, gen).to(dev, dtype);
  p.w = at::empty({v, d}, at::kFloat).normal_(0, 0.5, gen).to(dev, dtype);
  p.t = at::empty({n}, at::kLong).random_(0, v, gen);
  for (std::int64_t i = 0; i < n; ++i)
    if (i % 3 == 0 || (i >= 8 && i < 16)) p.t[i] = kIgnoreIndex;
  return p;
}

struct Grads {
  at::Tensor loss, dh, dw;
};

// (loss * g).backward() through either path, on fresh leaves.
Grads run(const Problem& p, bool fused, std::int64_t chunk_rows, bool train_w = true, double g = 0.37) {
  const at::Tensor h = p.h.detach().clone().requires_grad_(true);
  const at::Tensor w = p.w.detach().clone().requires_grad_(train_w);
  const at::Tensor loss = fused ? linear_cross_entropy_sum(h, w, p.t, chunk_rows)
                                : token_loss_sum(at::linear(h, w), p.t);
  (loss * g).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

void expect_equal(const Grads& a, const Grads& b, double tol) {
  EXPECT_LE(rel_error(a.loss, b.loss), tol);
  EXPECT_LE(rel_error(a.dh, b.dh), tol);
  ASSERT_EQ(a.dw.defined(), b.dw.defined());
  if (b.dw.defined()) EXPECT_LE(rel_error(a.dw, b.dw), tol);
}

TEST(LinearCrossEntropy, MatchesReferenceOnCpuFp32ForAnyChunking) {
  const Problem p = problem(37, 16, 50);
  const Grads ref = run(p, false, 0);
  // 8 rows: rows [8, 16) are one all-ignored chunk; 5 and 1 do not divide 37; 0: the budget (one chunk here).
  for (std::int64_t rows : {8, 5, 1, 0, 1000}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(rows));
    expect_equal(run(p, true, rows), ref, 1e-6);
  }
  EXPECT_EQ(run(p, true, 8).dh.narrow(0, 8, 8).abs().max().item<double>(), 0.0);  // ignored rows get no gradient
}

TEST(LinearCrossEntropy, FrozenHeadGetsNoGradient) {
  const Problem p = problem(21, 8, 30);
  const Grads fused = run(p, true, 4, /*train_w=*/false);
  EXPECT_FALSE(fused.dw.defined());
  expect_equal(fused, run(p, false, 0, false), 1e-6);
}

TEST(LinearCrossEntropy, AllTargetsIgnoredGivesZero) {
  Problem p = problem(12, 8, 20);
  p.t.fill_(kIgnoreIndex);
  const Grads fused = run(p, true, 5);
  EXPECT_EQ(fused.loss.item<double>(), 0.0);
  EXPECT_EQ(fused.dh.abs().max().item<double>(), 0.0);
  EXPECT_EQ(fused.dw.abs().max().item<double>(), 0.0);
}

TEST(LinearCrossEntropy, EvaluationWithoutGradMatches) {
  const Problem p = problem(37, 16, 50);
  at::NoGradGuard no_grad;
  const at::Tensor w = p.w.clone().requires_grad_(true);
  const at::Tensor fused = linear_cross_entropy_sum(p.h, w, p.t, 6);
  EXPECT_FALSE(fused.requires_grad());
  EXPECT_LE(rel_error(fused, token_loss_sum(at::linear(p.h, p.w), p.t)), 1e-6);
}

TEST(LinearCrossEntropy, Bf16WithinToleranceOfFp32) {
  const Problem p32 = problem(64, 32, 300);
  const Problem p16{p32.h.to(at::kBFloat16), p32.w.to(at::kBFloat16), p32.t};
  const Grads ref = run(p32, false, 0);
  const Grads fused = run(p16, true, 24);
  EXPECT_EQ(fused.dh.scalar_type(), at::kBFloat16);
  EXPECT_EQ(fused.dw.scalar_type(), at::kBFloat16);
  // Against fp32 logits the bf16 ones dominate the error (logits of std 22 are rounded to 0.125-0.5): 0.024 measured
  // for dh and dW on an H100, 0.025 in a CPU simulation of the same sizes whatever the softmax's own arithmetic. The
  // bound that tells the paths apart is the next two lines: no worse than twice the unfused bf16 head's error.
  expect_equal(fused, ref, 3e-2);
  // and no further from fp32 than the unfused bf16 path is
  const Grads unfused = run(p16, false, 0);
  EXPECT_LE(rel_error(fused.dh, ref.dh), 2 * rel_error(unfused.dh, ref.dh) + 1e-3);
}

// Every parameter's gradient of a tiny Llama through head_loss_sum (fused) and through forward() + token_loss_sum.
void expect_model_grads_equal(bool tied, bool lora) {
  LlamaConfig c = test::tiny_llama();
  c.tie_word_embeddings = tied;
  Llama ref = llama_random(c, 11);
  Llama fused = llama_random(c, 11);
  if (lora) {
    LoraConfig l;
    l.r = 4;
    for (Llama* m : {&ref, &fused}) lora_apply(**m, l, 3);
    at::NoGradGuard no_grad;  // non-zero B, so that the adapters' gradients are not trivially equal
    for (Llama* m : {&ref, &fused})
      for (auto& p : (*m)->named_parameters())
        if (p.key().find("lora_B") != std::string::npos) p.value().fill_(0.01);
  }
  fused->set_fused_loss(true);
  ASSERT_TRUE(fused->head_is_matmul());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor tokens = at::empty({3, 9}, at::kLong).random_(0, c.vocab_size, gen);
  at::Tensor targets = at::empty({3, 9}, at::kLong).random_(0, c.vocab_size, gen);
  targets.narrow(1, 0, 4).fill_(kIgnoreIndex);
  const at::Tensor a = token_loss_sum(ref->forward(tokens), targets);
  const at::Tensor b = head_loss_sum(*fused, fused->hidden_states(tokens), targets);
  EXPECT_LE(rel_error(b, a), 1e-6);
  (a * 0.1).backward();
  (b * 0.1).backward();
  const auto want = ref->named_parameters();
  int compared = 0;
  for (const auto& p : fused->named_parameters()) {
    const at::Tensor& g = want[p.key()].grad();
    ASSERT_EQ(p.value().grad().defined(), g.defined()) << p.key();
    if (!g.defined()) continue;
    EXPECT_LE(rel_error(p.value().grad(), g), 1e-6) << p.key();
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

TEST(LinearCrossEntropy, LlamaGradientsMatchUntied) { expect_model_grads_equal(false, false); }
TEST(LinearCrossEntropy, LlamaGradientsMatchTied) { expect_model_grads_equal(true, false); }
TEST(LinearCrossEntropy, LlamaGradientsMatchUnderLora) { expect_model_grads_equal(false, true); }

TEST(LinearCrossEntropy, HeadLossSumFallsBackUnlessFused) {
  Llama m = llama_random(test::tiny_llama(), 11);
  const at::Tensor tokens = at::arange(12, at::kLong).remainder(50).reshape({2, 6});
  const at::Tensor want = token_loss_sum(m->forward(tokens), tokens);
  EXPECT_TRUE(at::equal(head_loss_sum(*m, m->hidden_states(tokens), tokens), want));  // the reference, bit for bit
}

TEST(LinearCrossEntropy, ChunkRowsFollowTheBudget) {
  EXPECT_EQ(linear_cross_entropy_chunk_rows(32000), 2097);
  EXPECT_EQ(linear_cross_entropy_chunk_rows(128256), 523);
  EXPECT_EQ(linear_cross_entropy_chunk_rows(1 << 30), 1);
}

// bf16 on the GPU at TinyLlama's vocabulary: within tolerance of the fp32 reference, and the peak memory of the loss
// (the hidden states and head allocated beforehand) far below the unfused path's.
TEST(LinearCrossEntropyGpu, Bf16MatchesAndSavesMemory) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const at::Device dev(at::kCUDA, 0);
  const Problem p16 = problem(4096, 2048, 32000, at::kBFloat16, dev);
  const Problem p32{p16.h.to(at::kFloat), p16.w.to(at::kFloat), p16.t};
  const Grads ref = run(p32, false, 0);
  auto peak = [&](bool fused) {
    Problem q{p16.h, p16.w, p16.t.to(dev)};
    at::cuda::device_synchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
    const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    Grads g = run(q, fused, 0);
    at::cuda::device_synchronize();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    return std::make_pair(g, static_cast<double>(stats.allocated_bytes[0].peak - before) / (1 << 20));
  };
  const auto [fused, fused_mib] = peak(true);
  const auto [unfused, unfused_mib] = peak(false);
  std::printf("loss peak: fused %.0f MiB, unfused %.0f MiB (4096 x 32000 bf16)\n", fused_mib, unfused_mib);
  // Against fp32 logits the bf16 ones dominate the error (logits of std 22 are rounded to 0.125-0.5): 0.024 measured
  // for dh and dW on an H100, 0.025 in a CPU simulation of the same sizes whatever the softmax's own arithmetic. The
  // bound that tells the paths apart is the next two lines: no worse than twice the unfused bf16 head's error.
  expect_equal(fused, ref, 3e-2);
  EXPECT_LE(rel_error(fused.dh, ref.dh), 2 * rel_error(unfused.dh, ref.dh) + 1e-3);
  EXPECT_LE(rel_error(fused.dw, ref.dw), 2 * rel_error(unfused.dw, ref.dw) + 1e-3);
  EXPECT_LT(fused_mib, unfused_mib / 2);
}

// The softmax kernel (kernels/cross_entropy.h) against its ATen reference inside the chunked loss: loss, dh and dW in
// bf16 at TinyLlama's vocabulary, chunks that do not divide the rows, ignored rows.
TEST(LinearCrossEntropyGpu, KernelMatchesTheAtenSoftmax) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const Problem p = problem(1000, 512, 32000, at::kBFloat16, at::Device(at::kCUDA, 0));
  Grads g[2];
  for (int kernel = 0; kernel < 2; ++kernel) {
    const at::Tensor h = p.h.detach().clone().requires_grad_(true);
    const at::Tensor w = p.w.detach().clone().requires_grad_(true);
    const at::Tensor loss = linear_cross_entropy_sum(h, w, p.t.to(h.device()), 300, kernel == 1);
    (loss * 0.37).backward();
    g[kernel] = {loss.detach().cpu(), h.grad().cpu(), w.grad().cpu()};
  }
  EXPECT_LE(rel_error(g[1].loss, g[0].loss), 1e-6);
  EXPECT_LE(rel_error(g[1].dh, g[0].dh), 1e-2);
  EXPECT_LE(rel_error(g[1].dw, g[0].dw), 1e-2);
}

}  // namespace
}  // namespace ranktune
