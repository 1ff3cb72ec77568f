// defines: helpers shared by the pipeline tests: a small Llama, a crafted batch (document boundaries, masked targets),
// the reference loss and gradients of the unsharded model, and a norm-wise comparison of gradients by name.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "ranktune/core/config.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "ranktune/train/token_data.h"
#include "support/tiny_model.h"

namespace ranktune::test {

// The tiny model at twice its width and depth (and a wider MLP): the stage ranges of the tests assume four layers
// (units 1..4), and the batches below draw tokens from a vocabulary of 97.
inline LlamaConfig small_llama(bool tied) {
  LlamaConfig c = tiny_llama();
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_layers = 4;
  c.head_dim = 16;
  c.tie_word_embeddings = tied;
  return c;
}

// The model of a test case: random weights from a seed, optionally LoRA with adapters made non-zero (PEFT starts
// B at zero, which would leave A without gradient and the test blind to it).
inline Llama make_model(bool tied, int lora_r, const at::TensorOptions& options, double lora_dropout = 0) {
  Llama m = llama_random(small_llama(tied), 11, options);
  if (lora_r > 0) {
    LoraConfig lc;
    lc.r = lora_r;
    lc.alpha = 2.0 * lora_r;
    lc.dropout = lora_dropout;
    lora_apply(*m, lc, 5);
    at::NoGradGuard no_grad;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos)
        p.value().copy_(at::empty(p.value().sizes(), at::kFloat).normal_(0, 0.05, gen));
  }
  return m;
}

// b sequences of T tokens: two documents per row (positions restart), the first 3 targets of each row masked.
inline BatchTensors make_batch(std::int64_t b, std::int64_t T) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  BatchTensors bt;
  bt.tokens = at::randint(97, {b, T}, gen, at::TensorOptions().dtype(at::kLong));
  bt.targets = at::randint(97, {b, T}, gen, at::TensorOptions().dtype(at::kLong));
  bt.targets.narrow(1, 0, 3).fill_(kIgnoreIndex);
  const std::int64_t cut = T / 2 + 1;
  at::Tensor pos = at::cat({at::arange(cut), at::arange(T - cut)}).to(at::kLong);
  bt.positions = pos.unsqueeze(0).repeat({b, 1});
  bt.loss_tokens = (bt.targets != kIgnoreIndex).sum().item<long>();
  return bt;
}

inline std::map<std::string, at::Tensor> grads_of(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters())
    if (p.value().requires_grad() && p.value().grad().defined())
      out[p.key()] = p.value().grad().detach().to(at::kCPU, at::kDouble);
  return out;
}

// Loss of the unsharded model on the whole batch, gradients of scale * loss accumulated in the parameters.
inline double reference_step(LlamaImpl& m, const BatchTensors& bt, double scale) {
  const at::Device d = m.parameters().front().device();
  const at::Tensor sum = token_loss_sum(m.forward(bt.tokens.to(d), bt.positions.to(d)), bt.targets.to(d));
  (sum * scale).backward();
  return sum.item<double>();
}

// Every trainable parameter has a gradient in both, and they agree norm-wise within `tol`.
inline void expect_same_grads(const std::map<std::string, at::Tensor>& got,
                              const std::map<std::string, at::Tensor>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, g] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const double err = (got.at(name) - g).norm().item<double>() / std::max(g.norm().item<double>(), 1e-30);
    EXPECT_LE(err, tol) << name;
  }
}

}  // namespace ranktune::test
