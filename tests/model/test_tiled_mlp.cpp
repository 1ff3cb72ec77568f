// train.mlp_chunk_tokens (model/tiled_mlp.h): the MLP in slices of rows gives the loss and every gradient of the
// whole MLP (fp64 on the CPU, to rounding: the slices' matmuls and the summed parameter gradients differ only in
// summation order; LoRA's adapters are fp32 masters, so their gradients agree to fp32 rounding), for a full fine-tune
// and LoRA (also on an NF4 base), with and without activation checkpointing; with LoRA dropout the backward replays the
// forward's masks (against slices run as separate graphs from the same RNG state); parameter gradients are accumulated
// once a backward (the accumulator's post-hook, which DDP's gradient synchronisation uses, fires once); without
// gradients it is a plain loop with the same output.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/utils.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/model_test_util.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/quantize.h"
#include "ranktune/model/tiled_mlp.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

LoraConfig lora(double dropout) {
  LoraConfig l;
  l.r = 4;
  l.alpha = 8;
  l.dropout = dropout;
  return l;
}

Llama make_model(const std::optional<LoraConfig>& l, bool nf4 = false) {
  // QLoRA: an NF4 base in fp32 compute (the dequantized weights), beside the fp64 model of the other tests.
  Llama model = nf4 ? llama_random_quantized(test::tiny_llama(), 7, {}, Quantize::nf4)
                    : llama_random(test::tiny_llama(), 7, kF64);
  if (l) {
    lora_apply(*model, *l, 3);
    torch::manual_seed(5);
    at::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);  // adapters that matter
  }
  return model;
}

struct Step {
  at::Tensor loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

// One forward and backward of a fresh model over 2 x 24 tokens; chunk 10 leaves a short last slice (48 rows).
Step train_step(const std::optional<LoraConfig>& l, std::int64_t chunk, bool checkpointing, bool nf4 = false) {
  Llama model = make_model(l, nf4);
  model->set_mlp_chunk_tokens(chunk);
  model->set_activation_checkpointing(checkpointing);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const at::Tensor tokens = at::randint(test::tiny_llama().vocab_size, {2, 24}, gen, at::kLong);
  torch::manual_seed(11);
  Step s;
  s.loss = causal_lm_loss(model->forward(tokens), tokens);
  s.loss.backward();
  for (const auto& [name, p] : trainable_parameters(*model)) s.grads.emplace_back(name, p.grad().detach().clone());
  return s;
}

void expect_close(const Step& want, const Step& got) {
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-12);
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (std::size_t i = 0; i < want.grads.size(); ++i) {
    ASSERT_EQ(got.grads[i].first, want.grads[i].first);
    const at::Tensor& g = want.grads[i].second;
    const double scale = g.abs().max().item<double>() + 1e-30, tol = g.scalar_type() == at::kDouble ? 1e-12 : 1e-6;
    EXPECT_LE((got.grads[i].second - g).abs().max().item<double>() / scale, tol) << want.grads[i].first;
  }
}

TEST(TiledMlp, FullFineTuneEqualsTheWholeMlp) {
  for (bool ckpt : {false, true}) {
    SCOPED_TRACE(ckpt ? "activation checkpointing" : "plain");
    expect_close(train_step(std::nullopt, 0, ckpt), train_step(std::nullopt, 10, ckpt));
  }
}

TEST(TiledMlp, LoraEqualsTheWholeMlp) {
  for (bool ckpt : {false, true}) {
    SCOPED_TRACE(ckpt ? "activation checkpointing" : "plain");
    const Step whole = train_step(lora(0), 0, ckpt), tiled = train_step(lora(0), 10, ckpt);
    EXPECT_EQ(whole.grads.size(), 2u * 7 * 2);  // A and B of every target, two layers
    expect_close(whole, tiled);
    // A slice as large as the micro-batch is no tiling at all: the same path, the same bits.
    const Step one = train_step(lora(0), 48, ckpt);
    EXPECT_TRUE(at::equal(one.loss, whole.loss));
  }
}

TEST(TiledMlp, QloraEqualsTheWholeMlp) {
  const Step whole = train_step(lora(0), 0, true, true), tiled = train_step(lora(0), 10, true, true);
  EXPECT_NEAR(tiled.loss.item<double>(), whole.loss.item<double>(), 1e-6);
  ASSERT_EQ(whole.grads.size(), tiled.grads.size());
  for (std::size_t i = 0; i < whole.grads.size(); ++i) {
    const at::Tensor& g = whole.grads[i].second;
    EXPECT_LE((tiled.grads[i].second - g).abs().max().item<double>(), 1e-5 * g.abs().max().item<double>())
        << whole.grads[i].first;
  }
}

// With dropout the tiled backward must draw the masks its forward drew: against the same slices run as ordinary
// autograd graphs from the same RNG state (which draw in the same order), the gradients agree; another seed draws
// other masks and other gradients.
TEST(TiledMlp, DropoutMasksAreReplayedInTheBackward) {
  Llama model = make_model(lora(0.25));
  MlpImpl& mlp = *model->block(0)->mlp;
  ASSERT_TRUE(mlp.is_training());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor x0 = at::randn({2, 24, test::tiny_llama().hidden_size}, gen, at::kDouble);
  const at::Tensor w = at::randn({2, 24, test::tiny_llama().hidden_size}, gen, at::kDouble);
  auto grads_of = [&](bool tiled, std::uint64_t seed) {
    for (auto& p : mlp.parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor x = x0.clone().requires_grad_(true);
    torch::manual_seed(seed);
    at::Tensor out;
    if (tiled) {
      out = tiled_mlp(mlp, x, 10);
    } else {
      const at::Tensor x2d = x.reshape({48, -1});
      std::vector<at::Tensor> parts;
      for (std::int64_t b = 0; b < 48; b += 10) parts.push_back(mlp.forward_untiled(x2d.slice(0, b, b + 10)));
      out = at::cat(parts).view(x.sizes());
    }
    (out * w).sum().backward();
    std::vector<at::Tensor> g{x.grad().clone()};
    for (auto& p : mlp.parameters())
      if (p.requires_grad()) g.push_back(p.grad().clone());
    return g;
  };
  const auto ref = grads_of(false, 31), tiled = grads_of(true, 31), other = grads_of(true, 32);
  ASSERT_EQ(ref.size(), 1u + 6);  // x, and A and B of gate, up and down
  bool differs = false;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double tol = ref[i].scalar_type() == at::kDouble ? 1e-12 : 1e-6;  // x's gradient, then fp32 adapters'
    EXPECT_LE((tiled[i] - ref[i]).abs().max().item<double>(), tol * ref[i].abs().max().item<double>()) << i;
    differs = differs || !at::allclose(other[i], ref[i]);
  }
  EXPECT_TRUE(differs) << "dropout drew no masks";
}

// Parameter gradients leave the tiled op once, summed over its slices: the gradient accumulator's post-hook of an
// adapter (what distributed/grad_sync.cpp hooks) fires once per backward.
TEST(TiledMlp, ParameterGradientsArriveOnce) {
  Llama model = make_model(lora(0));
  model->set_mlp_chunk_tokens(10);
  int fired = 0;
  const auto accumulator = torch::autograd::impl::grad_accumulator(model->block(0)->mlp->gate_proj->lora_A->weight);
  accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [&](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
        ++fired;
        return outputs;
      }));
  const at::Tensor tokens = at::randint(test::tiny_llama().vocab_size, {2, 24}, at::kLong);
  causal_lm_loss(model->forward(tokens), tokens).backward();
  EXPECT_EQ(fired, 1);
}

TEST(TiledMlp, WithoutGradientsItIsALoopOverSlices) {
  Llama model = make_model(lora(0));
  model->eval();
  const at::Tensor tokens = at::randint(test::tiny_llama().vocab_size, {2, 24}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor whole = model->forward(tokens);
  model->set_mlp_chunk_tokens(7);
  EXPECT_LE((model->forward(tokens) - whole).abs().max().item<double>(), 1e-12);
}

}  // namespace
}  // namespace ranktune
