// LoRA: target parsing, PEFT's initialisation (A kaiming-uniform, B zero, so the model starts equal to the base), only
// adapters trainable, merge equal to the adapted model, dropout only while training; the fused op (lora_linear.h)
// against plain ATen ops and against the unfused reference path, in fp32 and bf16.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/kernels/fp8.h"
#include "ranktune/kernels/nf4.h"
#include "ranktune/kernels/swiglu.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/lora_linear.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/nf4_linear.h"
#include "ranktune/model/quantize.h"
#include "ranktune/model/safetensors.h"
#include "support/scratch_dir.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

// The tiny model with a vocabulary of 40: the tokens below are drawn from it, and the random weights (hence the
// margins of the checks) are those the expectations were set with.
LlamaConfig small_config() {
  LlamaConfig c = test::tiny_llama();
  c.vocab_size = 40;
  return c;
}

LoraConfig lora(int r, const std::string& targets = "q,k,v,o,gate,up,down", double dropout = 0) {
  LoraConfig l;
  l.r = r;
  l.alpha = 2.0 * r;
  l.dropout = dropout;
  l.target_modules = targets;
  return l;
}

at::Tensor tokens(std::int64_t b, std::int64_t t) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  return at::randint(40, {b, t}, gen, at::kLong);
}

void randomise_lora_B(LlamaImpl& m) {
  at::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);
  }
}

TEST(Lora, TargetModules) {
  EXPECT_EQ(lora_target_modules("q,k,v"), (std::vector<std::string>{"q_proj", "k_proj", "v_proj"}));
  EXPECT_EQ(lora_target_modules(" down_proj, q "), (std::vector<std::string>{"q_proj", "down_proj"}));
  EXPECT_EQ(lora_target_modules("q,k,v,o,gate,up,down").size(), 7u);
  try {
    lora_target_modules("q,lm_head");
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lm_head"), std::string::npos);
  }
  EXPECT_THROW(lora_target_modules(" , "), ConfigError);
}

TEST(Lora, ZeroBEqualsBaseAndOnlyAdaptersTrain) {
  Llama m = llama_random(small_config(), 1);
  const at::Tensor x = tokens(2, 7);
  const at::Tensor base = m->forward(x);
  lora_apply(*m, lora(4), 9);
  EXPECT_TRUE(lora_attached(*m));
  EXPECT_TRUE(at::equal(m->forward(x), base));

  const auto trainable = trainable_parameters(*m);
  ASSERT_EQ(trainable.size(), 2u * 7 * 2);
  for (const auto& [name, p] : trainable) EXPECT_NE(name.find(".lora_"), std::string::npos) << name;
  EXPECT_EQ(trainable[0].first, "model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(trainable[1].first, "model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(lora_peft_name(trainable[0].first), "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(trainable[0].second.sizes(), at::IntArrayRef({4, 32}));
  EXPECT_EQ(trainable[1].second.sizes(), at::IntArrayRef({32, 4}));

  causal_lm_loss(m->forward(x), x).backward();
  for (const auto& p : m->named_parameters()) {
    const bool adapter = p.key().find(".lora_") != std::string::npos;
    EXPECT_EQ(p.value().grad().defined(), adapter) << p.key();
  }
  // With B = 0 only B receives gradient at the first step, as in PEFT.
  EXPECT_GT(m->block(0)->self_attn->q_proj->lora_B->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(m->block(0)->self_attn->q_proj->lora_A->weight.grad().abs().sum().item<double>(), 0);
}

TEST(Lora, InitMatchesPeft) {
  Llama m = llama_random(small_config(), 1);
  lora_apply(*m, lora(8), 5);
  const at::Tensor a = m->block(1)->mlp->down_proj->lora_A->weight;  // [8, 48]
  const double bound = 1.0 / std::sqrt(48.0);
  EXPECT_LE(a.abs().max().item<double>(), bound);
  EXPECT_NEAR(a.std().item<double>(), bound / std::sqrt(3.0), 0.15 * bound);
  EXPECT_TRUE(at::equal(m->block(1)->mlp->down_proj->lora_B->weight, at::zeros({32, 8})));
  EXPECT_DOUBLE_EQ(m->block(1)->mlp->down_proj->lora_scale, 2.0);
  Llama again = llama_random(small_config(), 1);
  lora_apply(*again, lora(8), 5);
  EXPECT_TRUE(at::equal(again->block(1)->mlp->down_proj->lora_A->weight, a));
}

TEST(Lora, SubsetOfTargets) {
  Llama m = llama_random(small_config(), 1);
  lora_apply(*m, lora(2, "q,v"), 5);
  EXPECT_EQ(trainable_parameters(*m).size(), 2u * 2 * 2);
  EXPECT_FALSE(m->block(0)->self_attn->k_proj->lora_A);
  EXPECT_TRUE(m->block(0)->self_attn->v_proj->lora_A);
  EXPECT_THROW(lora_apply(*m, lora(2), 5), ConfigError);  // already attached
}

TEST(Lora, MergeGivesTheSameLogits) {
  Llama m = llama_random(small_config(), 1);
  const std::vector<std::string> base_names = m->named_parameters().keys();
  lora_apply(*m, lora(4), 3);
  randomise_lora_B(*m);
  const at::Tensor x = tokens(2, 9);
  const at::Tensor adapted = m->forward(x);
  const at::Tensor base = llama_random(small_config(), 1)->forward(x);
  EXPECT_GT(test::rel_error(adapted, base), 1e-3);  // the adapters do something
  lora_merge(*m);
  EXPECT_FALSE(lora_attached(*m));
  EXPECT_EQ(m->named_parameters().keys(), base_names);
  EXPECT_LT(test::rel_error(m->forward(x), adapted), 1e-5);
}

// One fused linear against the same math in plain autograd ops, with every input differentiable (a trainable base
// and bias too) and a dropped adapter input: forward, and each gradient, in fp32 on the CPU.
TEST(LoraLinear, MatchesPlainOpsInFp32) {
  at::manual_seed(4);
  const auto leaf = [](const at::Tensor& t) { return t.clone().set_requires_grad(true); };
  const at::Tensor x0 = at::randn({2, 5, 12}), w0 = at::randn({9, 12}), b0 = at::randn({9});
  const at::Tensor a0 = at::randn({3, 12}), B0 = at::randn({9, 3});
  const at::Tensor keep = (at::rand({2, 5, 12}) > 0.3).to(at::kFloat) / 0.7;
  const at::Tensor dy = at::randn({2, 5, 9});
  const double scale = 1.7;  // not a power of two: the folding order shows

  for (const bool dropped : {false, true}) {
    SCOPED_TRACE(dropped ? "with a dropped adapter input" : "adapter reads x");
    const at::Tensor x1 = leaf(x0), w1 = leaf(w0), b1 = leaf(b0), a1 = leaf(a0), B1 = leaf(B0);
    const at::Tensor y1 = lora_linear(x1, w1, b1, a1, B1, scale, dropped ? x1 * keep : at::Tensor());
    y1.backward(dy);
    const at::Tensor x2 = leaf(x0), w2 = leaf(w0), b2 = leaf(b0), a2 = leaf(a0), B2 = leaf(B0);
    const at::Tensor xin = dropped ? x2 * keep : x2;
    const at::Tensor y2 = at::linear(x2, w2, b2) + at::linear(at::linear(xin, a2), B2) * scale;
    y2.backward(dy);
    EXPECT_LT(test::rel_error(y1, y2), 1e-6);
    for (const auto& [g1, g2] : {std::pair{x1.grad(), x2.grad()},
                                 {w1.grad(), w2.grad()},
                                 {b1.grad(), b2.grad()},
                                 {a1.grad(), a2.grad()},
                                 {B1.grad(), B2.grad()}}) {
      ASSERT_TRUE(g1.defined());
      EXPECT_EQ(g1.scalar_type(), at::kFloat);
      EXPECT_LT(test::rel_error(g1, g2), 1e-6);
    }
  }
}

// down_proj's form: the SwiGLU product recomputed in backward equals the plain composition, with and without bias.
TEST(LoraLinear, SwigluDownRecomputesTheProduct) {
  at::manual_seed(6);
  const auto leaf = [](const at::Tensor& t) { return t.clone().set_requires_grad(true); };
  const at::Tensor g0 = at::randn({2, 5, 12}), u0 = at::randn({2, 5, 12}), w = at::randn({9, 12});
  const at::Tensor a0 = at::randn({3, 12}), B0 = at::randn({9, 3}), dy = at::randn({2, 5, 9});
  for (const bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    const at::Tensor bias = with_bias ? at::randn({9}).requires_grad_(true) : at::Tensor();
    const at::Tensor g1 = leaf(g0), u1 = leaf(u0), a1 = leaf(a0), B1 = leaf(B0);
    const at::Tensor y1 = lora_swiglu_linear(g1, u1, w, bias, a1, B1, 1.7);
    y1.backward(dy);
    const at::Tensor bias1_grad = with_bias ? bias.grad().clone() : at::Tensor();
    const at::Tensor g2 = leaf(g0), u2 = leaf(u0), a2 = leaf(a0), B2 = leaf(B0);
    const at::Tensor h = at::silu(g2) * u2;
    const at::Tensor y2 = at::linear(h, w, bias) + at::linear(at::linear(h, a2), B2) * 1.7;
    y2.backward(dy);
    EXPECT_LT(test::rel_error(y1, y2), 1e-6);
    for (const auto& [x1, x2] :
         {std::pair{g1.grad(), g2.grad()}, {u1.grad(), u2.grad()}, {a1.grad(), a2.grad()}, {B1.grad(), B2.grad()}})
      EXPECT_LT(test::rel_error(x1, x2), 1e-5);
    if (with_bias) EXPECT_LT(test::rel_error(bias1_grad, bias.grad() - bias1_grad), 1e-5);
  }
  EXPECT_THROW(lora_swiglu_linear(g0, u0, w.clone().requires_grad_(true), {}, a0, B0, 1.0), LibraryError);
}

// The same form over an NF4 base (QLoRA's down_proj): bit for bit what qlora_linear over swiglu(gate, up) gives, in
// values and every gradient, with and without bias.
TEST(LoraLinear, QloraSwigluDownEqualsQloraOverTheProduct) {
  at::manual_seed(7);
  const auto leaf = [](const at::Tensor& t) { return t.clone().set_requires_grad(true); };
  const at::Tensor g0 = at::randn({2, 5, 128}), u0 = at::randn({2, 5, 128});
  const Nf4Weight w = nf4_quantize(at::randn({9, 128}));
  const at::Tensor a0 = at::randn({3, 128}), B0 = at::randn({9, 3}), dy = at::randn({2, 5, 9});
  for (const bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    const at::Tensor b0 = at::randn({9});
    const at::Tensor bias1 = with_bias ? leaf(b0) : at::Tensor(), bias2 = with_bias ? leaf(b0) : at::Tensor();
    const at::Tensor g1 = leaf(g0), u1 = leaf(u0), a1 = leaf(a0), B1 = leaf(B0);
    const at::Tensor y1 = qlora_swiglu_linear(g1, u1, w, bias1, a1, B1, 1.7);
    y1.backward(dy);
    const at::Tensor g2 = leaf(g0), u2 = leaf(u0), a2 = leaf(a0), B2 = leaf(B0);
    const at::Tensor y2 = qlora_linear(swiglu(g2, u2), w, bias2, a2, B2, 1.7);
    y2.backward(dy);
    EXPECT_TRUE(at::equal(y1, y2));
    for (const auto& [x1, x2] :
         {std::pair{g1.grad(), g2.grad()}, {u1.grad(), u2.grad()}, {a1.grad(), a2.grad()}, {B1.grad(), B2.grad()}})
      EXPECT_TRUE(at::equal(x1, x2));
    if (with_bias) EXPECT_TRUE(at::equal(bias1.grad(), bias2.grad()));
  }
  EXPECT_THROW(qlora_swiglu_linear(g0, u0.narrow(-1, 0, 64), w, {}, a0, B0, 1.0), LibraryError);
}

// Under lora_apply the base is frozen: no gradient is made for it, and the adapters' gradients keep their fp32 dtype
// over a bf16 input.
TEST(LoraLinear, FrozenBaseGetsNoGradient) {
  at::manual_seed(5);
  const at::Tensor w = at::randn({6, 8}, at::kBFloat16), x = at::randn({4, 8}, at::kBFloat16).requires_grad_(true);
  const at::Tensor a = at::randn({2, 8}).requires_grad_(true), b = at::randn({6, 2}).requires_grad_(true);
  const at::Tensor y = lora_linear(x, w, {}, a, b, 2.0);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.sum().backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_EQ(a.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(b.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(x.grad().scalar_type(), at::kBFloat16);
  EXPECT_THROW(lora_linear(at::randn({4, 7}), w, {}, a, b, 2.0), LibraryError);
}

// FP8 base matmuls (train.fp8_matmuls): the output is x and W quantized by rows, multiplied, plus bias and adapter;
// dX is dY by rows times W by columns plus the adapter's part; dA and dB never see FP8, so they equal the 16-bit op's
// bit for bit; the output stays within e4m3's error of the 16-bit one. Plain and down_proj forms, fp32 on the CPU.
TEST(LoraLinear, Fp8BaseIsTheQuantizedProductAndLeavesTheAdapterGradientsAlone) {
  at::manual_seed(8);
  const auto leaf = [](const at::Tensor& t) { return t.clone().set_requires_grad(true); };
  const at::Tensor x0 = at::randn({2, 5, 32}), w = at::randn({16, 32}) * 0.2, b = at::randn({16});
  const at::Tensor a0 = at::randn({3, 32}), B0 = at::randn({16, 3}), dy = at::randn({2, 5, 16});
  const double scale = 1.7;
  const auto deq = [](const Fp8Rows& r) { return r.q.to(at::kFloat) * r.scale; };
  const auto run = [&](bool fp8) {
    const at::Tensor x = leaf(x0), a = leaf(a0), B = leaf(B0);
    const at::Tensor y = lora_linear(x, w, b, a, B, scale, {}, fp8);
    y.backward(dy);
    return std::vector<at::Tensor>{y.detach(), x.grad(), a.grad(), B.grad()};
  };
  const std::vector<at::Tensor> f = run(true), p = run(false);
  const at::Tensor x2 = x0.view({10, 32}), dy2 = dy.view({10, 16});
  const at::Tensor xa = at::mm(x2, a0.t()), sb = B0 * scale;
  const at::Tensor want_y = at::mm(deq(fp8_quantize_rows(x2)), deq(fp8_quantize_rows(w)).t()) + b + at::mm(xa, sb.t());
  const at::Tensor want_dx = at::mm(deq(fp8_quantize_rows(dy2)), deq(fp8_quantize_columns(w)).t()) +
                             at::mm(at::mm(dy2, sb), a0);
  EXPECT_LT(test::rel_error(f[0].view({10, 16}), want_y), 1e-6);
  EXPECT_LT(test::rel_error(f[1].view({10, 32}), want_dx), 1e-6);
  EXPECT_TRUE(at::equal(f[2], p[2]));  // dA
  EXPECT_TRUE(at::equal(f[3], p[3]));  // dB
  EXPECT_LT(test::rel_error(f[0], p[0]), 0.05);
  EXPECT_GT(test::rel_error(f[0], p[0]), 1e-4);  // the base did go through FP8
  EXPECT_LT(test::rel_error(f[1], p[1]), 0.05);

  // down_proj's form over swiglu(gate, up): the same relations.
  const at::Tensor g0 = at::randn({2, 5, 32}), u0 = at::randn({2, 5, 32});
  const auto run_down = [&](bool fp8) {
    const at::Tensor g = leaf(g0), u = leaf(u0), a = leaf(a0), B = leaf(B0);
    const at::Tensor y = lora_swiglu_linear(g, u, w, {}, a, B, scale, fp8);
    y.backward(dy);
    return std::vector<at::Tensor>{y.detach(), g.grad(), u.grad(), a.grad(), B.grad()};
  };
  const std::vector<at::Tensor> fd = run_down(true), pd = run_down(false);
  const at::Tensor h = (at::silu(g0) * u0).view({10, 32});
  EXPECT_LT(test::rel_error(fd[0].view({10, 16}), at::mm(deq(fp8_quantize_rows(h)), deq(fp8_quantize_rows(w)).t()) +
                                                      at::mm(at::mm(h, a0.t()), sb.t())),
            1e-6);
  EXPECT_TRUE(at::equal(fd[3], pd[3]));
  EXPECT_TRUE(at::equal(fd[4], pd[4]));
  EXPECT_LT(test::rel_error(fd[1], pd[1]), 0.05);
  EXPECT_LT(test::rel_error(fd[2], pd[2]), 0.05);
  EXPECT_THROW(lora_linear(x0, leaf(w), b, a0, B0, scale, {}, /*fp8=*/true), LibraryError);  // a trainable base
}

// lora_use_fp8 on the whole model: the loss and every adapter gradient stay near the 16-bit run's, turning it off
// gives the 16-bit logits back bit for bit, and a 4-bit base is refused by name.
TEST(Lora, Fp8MatmulsTrainNearTheSixteenBitModel) {
  Llama m = llama_random(small_config(), 1, at::TensorOptions().dtype(at::kFloat));
  lora_apply(*m, lora(4), 3);
  randomise_lora_B(*m);
  const at::Tensor x = tokens(2, 9);
  const auto run = [&](bool fp8) {
    lora_use_fp8(*m, fp8);
    m->zero_grad();
    const at::Tensor logits = m->forward(x);
    const at::Tensor loss = causal_lm_loss(logits, x);
    loss.backward();
    std::vector<at::Tensor> out{logits.detach(), loss.detach()};
    for (const auto& [name, p] : trainable_parameters(*m)) out.push_back(p.grad().clone());
    return out;
  };
  const std::vector<at::Tensor> plain = run(false), fp8 = run(true), again = run(false);
  EXPECT_TRUE(at::equal(plain[0], again[0]));
  EXPECT_FALSE(at::equal(plain[0], fp8[0]));
  EXPECT_LT(std::abs(fp8[1].item<double>() - plain[1].item<double>()), 0.02 * plain[1].item<double>());
  for (std::size_t i = 2; i < plain.size(); ++i)
    EXPECT_LT(test::rel_error(fp8[i], plain[i]), 0.15) << trainable_parameters(*m)[i - 2].first;

  Llama q = llama_random_quantized(small_config(), 1, at::TensorOptions().dtype(at::kFloat), Quantize::nf4);
  lora_apply(*q, lora(4), 3);
  EXPECT_THROW(lora_use_fp8(*q, true), ConfigError);
}

// The whole model, fused against the reference path (lora_use_reference): logits, loss and every adapter gradient.
// fp32 agrees to rounding; bf16 (base bf16, adapters fp32 as lora_apply makes them) within what the adapter computed
// in bf16 instead of fp32 costs.
void expect_fused_matches_reference(at::ScalarType dtype, double tol_out, double tol_grad) {
  Llama m = llama_random(small_config(), 1, at::TensorOptions().dtype(dtype));
  lora_apply(*m, lora(4), 3);
  randomise_lora_B(*m);
  const at::Tensor x = tokens(2, 9);
  const auto run = [&](bool reference) {
    lora_use_reference(*m, reference);
    m->zero_grad();
    const at::Tensor logits = m->forward(x);
    causal_lm_loss(logits, x).backward();
    std::vector<at::Tensor> out{logits.detach()};
    for (const auto& [name, p] : trainable_parameters(*m)) out.push_back(p.grad().clone());
    return out;
  };
  const std::vector<at::Tensor> fused = run(false), reference = run(true);
  ASSERT_EQ(fused.size(), reference.size());
  EXPECT_EQ(fused[0].scalar_type(), dtype);
  EXPECT_LT(test::rel_error(fused[0], reference[0]), tol_out);
  for (std::size_t i = 1; i < fused.size(); ++i) {
    EXPECT_EQ(fused[i].scalar_type(), at::kFloat);
    EXPECT_LT(test::rel_error(fused[i], reference[i]), tol_grad) << trainable_parameters(*m)[i - 1].first;
  }
}

TEST(LoraLinear, ModelMatchesReferenceFp32) { expect_fused_matches_reference(at::kFloat, 1e-6, 1e-6); }

TEST(LoraLinear, ModelMatchesReferenceBf16) { expect_fused_matches_reference(at::kBFloat16, 2e-2, 3e-2); }

// On the GPU at TinyLlama's attention widths (bf16 base, fp32 adapters, r = 16): q, k and v read one input. The
// fused path matches the reference within bf16 tolerance, and what its graph holds beyond the outputs is only the
// [tokens, r] products and the small adapter copies: no fp32 copy of the input, let alone one per projection.
// FP8 base matmuls on a GPU (at::_scaled_mm and the quantization kernels) against the CPU's fp32 arithmetic over the
// same bf16 values, at Llama-3-8B's k_proj width with 4096 tokens: output, dX, dA and dB within bf16 rounding.
TEST(LoraLinearGpu, Fp8BaseMatchesTheCpuArithmetic) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  if (!fp8_matmuls_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "FP8 matmuls need compute capability 8.9";
  at::manual_seed(9);
  const at::Tensor x0 = at::randn({2, 2048, 4096}).to(at::kBFloat16),
                   w0 = (at::randn({1024, 4096}) * 0.02).to(at::kBFloat16);
  const at::Tensor a0 = at::randn({16, 4096}) * 0.01, B0 = at::randn({1024, 16}) * 0.01;
  const at::Tensor dy = at::randn({2, 2048, 1024}).to(at::kBFloat16);
  const auto run = [&](const at::Device& d, at::ScalarType dtype) {
    const at::Tensor x = x0.to(d, dtype).set_requires_grad(true), w = w0.to(d, dtype);
    const at::Tensor a = a0.to(d).set_requires_grad(true), B = B0.to(d).set_requires_grad(true);
    const at::Tensor y = lora_linear(x, w, {}, a, B, 2.0, {}, /*fp8=*/true);
    y.backward(dy.to(d, dtype));
    return std::vector<at::Tensor>{y.detach().cpu(), x.grad().cpu(), a.grad().cpu(), B.grad().cpu()};
  };
  const std::vector<at::Tensor> gpu = run(at::Device(at::kCUDA, 0), at::kBFloat16), cpu = run(at::kCPU, at::kFloat);
  const char* names[] = {"y", "dx", "dA", "dB"};
  for (int i = 0; i < 4; ++i) EXPECT_LT(test::rel_error(gpu[i].to(at::kFloat), cpu[i]), 1e-2) << names[i];
}

TEST(LoraLinearGpu, SharedInputHeldOnceAndMatches) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const at::Device dev(at::kCUDA, 0);
  const std::int64_t tokens = 4096, hidden = 2048, kv = 256, r = 16;
  at::manual_seed(8);
  std::vector<Linear> proj;
  for (const std::int64_t out : {hidden, kv, kv}) {
    Linear l(hidden, out, /*bias=*/false, at::TensorOptions().dtype(at::kBFloat16).device(dev));
    at::NoGradGuard g;
    l->weight.normal_(0, 0.02);
    l->lora_A = l->register_module("lora_A", Linear(hidden, r, false, at::TensorOptions().device(dev)));
    l->lora_B = l->register_module("lora_B", Linear(r, out, false, at::TensorOptions().device(dev)));
    l->lora_A->weight.uniform_(-0.02, 0.02);
    l->lora_B->weight.normal_(0, 0.02);
    l->lora_scale = 2.0;
    l->weight.requires_grad_(false);
    proj.push_back(l);
  }
  const at::Tensor x0 = at::randn({2, tokens / 2, hidden}, at::TensorOptions().dtype(at::kBFloat16).device(dev));
  const at::Tensor dy = at::randn({2, tokens / 2, hidden + 2 * kv}, x0.options());

  struct Result {
    std::vector<at::Tensor> values;
    double held_mib;
    double ms;
  };
  const auto run = [&](bool reference, int repeats) {
    for (auto& l : proj) {
      l->lora_reference = reference;
      l->zero_grad();
    }
    const at::Tensor x = x0.clone().requires_grad_(true);
    at::cuda::device_synchronize();
    const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
    const at::Tensor y = at::cat({proj[0]->forward(x), proj[1]->forward(x), proj[2]->forward(x)}, -1);
    at::cuda::device_synchronize();
    const auto after = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
    y.backward(dy);
    Result res{{y.detach()}, static_cast<double>(after - before - y.nbytes()) / (1 << 20), 0};
    res.values.push_back(x.grad());
    for (auto& l : proj) {
      res.values.push_back(l->lora_A->weight.grad().clone());
      res.values.push_back(l->lora_B->weight.grad().clone());
    }
    at::cuda::device_synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) {
      const at::Tensor xi = x0.clone().requires_grad_(true);
      at::cat({proj[0]->forward(xi), proj[1]->forward(xi), proj[2]->forward(xi)}, -1).backward(dy);
    }
    at::cuda::device_synchronize();
    res.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / repeats;
    return res;
  };
  run(false, 3);
  run(true, 3);
  const Result fused = run(false, 20), reference = run(true, 20);
  const double x_mib = static_cast<double>(x0.nbytes()) / (1 << 20);
  std::printf(
      "q,k,v over %ld tokens: held beyond the outputs fused %.2f MiB, reference %.2f MiB (x is %.0f MiB bf16); "
      "forward+backward fused %.3f ms, reference %.3f ms\n",
      static_cast<long>(tokens), fused.held_mib, reference.held_mib, x_mib, fused.ms, reference.ms);
  // y itself is excluded; the q, k, v outputs before the cat stay alive only in the reference (its add saves none).
  EXPECT_LT(fused.held_mib, 0.1 * x_mib);
  EXPECT_GT(reference.held_mib, 5 * x_mib);  // three fp32 copies of x, each twice its size
  EXPECT_LT(test::rel_error(fused.values[0], reference.values[0]), 1e-2);
  for (std::size_t i = 1; i < fused.values.size(); ++i) {
    EXPECT_EQ(fused.values[i].scalar_type(), reference.values[i].scalar_type()) << i;
    EXPECT_LT(test::rel_error(fused.values[i], reference.values[i]), 2e-2) << i;
  }
}

TEST(Lora, DropoutOnlyWhileTraining) {
  Llama m = llama_random(small_config(), 1);
  lora_apply(*m, lora(4, "q,k,v,o,gate,up,down", 0.5), 3);
  randomise_lora_B(*m);
  const at::Tensor x = tokens(1, 6);
  m->train();
  EXPECT_FALSE(at::equal(m->forward(x), m->forward(x)));
  m->eval();
  EXPECT_TRUE(at::equal(m->forward(x), m->forward(x)));
}

TEST(Lora, SaveRefusedWithAdaptersAttached) {
  Llama m = llama_random(small_config(), 1);
  lora_apply(*m, lora(2), 3);
  test::ScratchDir dir("lora_save");
  EXPECT_THROW(llama_save_pretrained(*m, dir.str()), CheckpointError);
}

// A PEFT adapter directory built from the fixture with one edit to adapter_config.json, or one tensor dropped.
TEST(Lora, PeftAdapterProblemsNamed) {
  const std::string base = test::fixture("llama_gqa_untied");
  std::ifstream in(test::fixture("lora/adapter_config.json"));
  const std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  test::ScratchDir dir("lora_peft");
  const auto write_config = [&](const std::string& from, const std::string& to) {
    std::string text = config;
    const auto pos = text.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    std::ofstream(dir / "adapter_config.json") << text.replace(pos, from.size(), to);
  };
  const SafetensorsFile weights(test::fixture("lora/adapter_model.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& e : weights.entries()) tensors.emplace_back(e.name, weights.tensor(e.name));
  safetensors_save(dir / "adapter_model.safetensors", tensors);

  write_config("\"use_dora\": false", "\"use_dora\": true");
  try {
    lora_load_peft(*llama_from_pretrained(base), dir.str());
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("use_dora"), std::string::npos) << e.what();
  }
  write_config("\"r\": 4", "\"r\": \"four\"");
  EXPECT_THROW(lora_load_peft(*llama_from_pretrained(base), dir.str()), ConfigError);

  write_config("\"use_dora\": false", "\"use_dora\": false");
  tensors.pop_back();
  ASSERT_EQ(tensors.size() + 1, weights.entries().size());
  safetensors_save(dir / "adapter_model.safetensors", tensors);
  try {
    lora_load_peft(*llama_from_pretrained(base), dir.str());
    ADD_FAILURE();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("lacks base_model.model."), std::string::npos) << e.what();
  }
}

TEST(Lora, BadSettingsRefused) {
  Llama m = llama_random(small_config(), 1);
  EXPECT_THROW(lora_apply(*m, lora(0), 1), ConfigError);
  EXPECT_THROW(lora_apply(*m, lora(2, "q", 1.0), 1), ConfigError);
  EXPECT_THROW(lora_apply(*m, lora(2, "x"), 1), ConfigError);
}

}  // namespace
}  // namespace ranktune
