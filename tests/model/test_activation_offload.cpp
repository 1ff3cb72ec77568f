// train.activation_offload: activation checkpointing with each layer's saved input kept on the host. On the CPU (a
// separate copy, the same code path) loss and every gradient are bit-identical to checkpointing alone, for a full
// fine-tune and for LoRA with dropout (the RNG replay) over packed documents, and the kept input is a copy: changing
// the caller's tensor after the forward changes nothing. On a GPU (skipped without one): the same equality in bf16 and
// fp32 (bitwise, or within the run-to-run noise of the baseline's own atomics), and the device memory held after
// the forward is lower by the layers' inputs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/model_test_util.h"
#include "ranktune/core/pinned_bytes.h"
#include "ranktune/model/activation_checkpoint.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "support/tiny_model.h"

#ifdef RANKTUNE_HAVE_CUDA
#include <ATen/core/CachingHostAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ranktune {
namespace {

// Two rows of packed documents (lengths 5, 9, 2 and 7, 9), positions restarting at each document.
struct Batch {
  at::Tensor tokens, positions, documents, labels;
};

Batch packed_batch(std::int64_t vocab, std::int64_t seq, const at::Device& device) {
  const std::vector<std::vector<std::int64_t>> lengths{{5, 9, seq - 14}, {7, seq - 7}};
  std::vector<std::int64_t> docs, pos;
  for (const auto& row : lengths)
    for (std::size_t d = 0; d < row.size(); ++d)
      for (std::int64_t t = 0; t < row[d]; ++t) docs.push_back(static_cast<std::int64_t>(d)), pos.push_back(t);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  Batch b;
  b.tokens = at::randint(vocab, {2, seq}, gen, at::kLong);
  b.documents = at::tensor(docs, at::kLong).view({2, seq});
  b.positions = at::tensor(pos, at::kLong).view({2, seq});
  b.labels = b.tokens.clone();
  b.labels.masked_fill_(b.positions == 0, kIgnoreIndex);  // no target across a document boundary
  for (at::Tensor* t : {&b.tokens, &b.documents, &b.positions, &b.labels}) *t = t->to(device);
  return b;
}

LoraConfig lora_with_dropout() {
  LoraConfig l;
  l.r = 4;
  l.alpha = 8;
  l.dropout = 0.25;
  return l;
}

struct Step {
  at::Tensor loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
  at::Tensor flat() const {
    std::vector<at::Tensor> g;
    for (const auto& [name, t] : grads) g.push_back(t.flatten().to(at::kDouble));
    return at::cat(g);
  }
};

// One training forward and backward of a fresh random model with activation checkpointing, offloaded or not. The
// seeds make every run draw the same weights, adapters and dropout masks.
// host_cap: the offload's cap on host bytes (set_activation_offload); `budget`, when given, receives the model's
// budget figures after the forward (held, refused) and after the backward (held).
struct BudgetSeen {
  std::int64_t held_after_forward = -1, refused = -1, held_after_backward = -1;
};
Step train_step(const LlamaConfig& c, const at::TensorOptions& options, const std::optional<LoraConfig>& lora,
                bool offload, const Batch& batch, std::uint64_t dropout_seed = 11,
                std::int64_t host_cap = std::numeric_limits<std::int64_t>::max(), BudgetSeen* budget = nullptr,
                std::int64_t checkpointed_layers = 0) {
  Llama model = llama_random(c, 7, options);
  if (lora) {
    lora_apply(*model, *lora, 3);
    torch::manual_seed(5);
    at::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);  // adapters that matter
  }
  model->set_activation_checkpointing(true, checkpointed_layers);
  model->set_activation_offload(offload, host_cap);
  EXPECT_TRUE(model->is_training());
  torch::manual_seed(dropout_seed);
  Step s;
  s.loss = causal_lm_loss(model->forward(batch.tokens, batch.positions, batch.documents), batch.labels);
  if (budget) {
    budget->held_after_forward = model->offload_budget().held();
    budget->refused = model->offload_budget().refused();
  }
  s.loss.backward();
  if (budget) budget->held_after_backward = model->offload_budget().held();
  for (const auto& [name, p] : trainable_parameters(*model)) {
    EXPECT_TRUE(p.grad().defined()) << name;
    s.grads.emplace_back(name, p.grad().detach().cpu());
  }
  s.loss = s.loss.detach().cpu();
  return s;
}

void expect_identical(const Step& want, const Step& got) {
  EXPECT_TRUE(at::equal(got.loss, want.loss)) << got.loss.item<double>() << " vs " << want.loss.item<double>();
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (std::size_t i = 0; i < want.grads.size(); ++i) {
    ASSERT_EQ(got.grads[i].first, want.grads[i].first);
    EXPECT_TRUE(at::equal(got.grads[i].second, want.grads[i].second)) << want.grads[i].first;
  }
}

TEST(ActivationOffload, CpuFullFineTuneIsBitIdentical) {
  const LlamaConfig c = test::tiny_llama();
  const Batch b = packed_batch(c.vocab_size, 24, at::kCPU);
  const Step ckpt = train_step(c, {}, std::nullopt, false, b);
  const Step off = train_step(c, {}, std::nullopt, true, b);
  EXPECT_EQ(ckpt.grads.size(), trainable_parameters(*llama_random(c, 7)).size());
  expect_identical(ckpt, off);
}

// The tiny model with four layers and its packed batch on the CPU; each layer input is [2, 24, hidden] in fp32.
struct FourLayers {
  LlamaConfig config = [] {
    LlamaConfig c = test::tiny_llama();
    c.num_layers = 4;
    return c;
  }();
  Batch batch = packed_batch(config.vocab_size, 24, at::kCPU);
  std::int64_t input_bytes = 2 * 24 * config.hidden_size * 4;
};

// A host cap of two layer inputs: the first two layers offload, the others keep their input as checkpointing alone
// does; loss and gradients unchanged, and the cap's bytes come back once the backward has consumed the inputs.
TEST(ActivationOffload, AHostCapKeepsTheInputsPastItOnTheDevice) {
  const FourLayers k;
  const auto& [c, b, input_bytes] = k;
  const Step ckpt = train_step(c, {}, lora_with_dropout(), false, b);
  BudgetSeen seen;
  const Step capped = train_step(c, {}, lora_with_dropout(), true, b, 11, 2 * input_bytes + input_bytes / 2, &seen);
  expect_identical(ckpt, capped);
  EXPECT_EQ(seen.held_after_forward, 2 * input_bytes);
  EXPECT_EQ(seen.refused, 2);
  EXPECT_EQ(seen.held_after_backward, 0);
  // No cap: every input offloaded, none refused.
  BudgetSeen all;
  expect_identical(ckpt,
                   train_step(c, {}, lora_with_dropout(), true, b, 11, std::numeric_limits<std::int64_t>::max(), &all));
  EXPECT_EQ(all.held_after_forward, 4 * input_bytes);
  EXPECT_EQ(all.refused, 0);
  EXPECT_EQ(all.held_after_backward, 0);
}

// train.activation_checkpointing_layers: only the layers that recompute go through activation checkpointing, so only
// their inputs are offloaded (the budget counts them: 1, 2 and 3 of 4 layers); the others keep their activations.
// Loss and gradients equal every layer recomputing, with LoRA dropout (masks drawn in both kinds of layer).
TEST(ActivationOffload, OnlyTheLayersThatRecomputeOffload) {
  const FourLayers k;
  const auto& [c, b, input_bytes] = k;
  const Step every = train_step(c, {}, lora_with_dropout(), false, b);
  for (const std::int64_t layers : {1, 2, 3}) {
    SCOPED_TRACE(std::to_string(layers) + " of 4 layers recompute");
    BudgetSeen seen;
    const Step part =
        train_step(c, {}, lora_with_dropout(), true, b, 11, std::numeric_limits<std::int64_t>::max(), &seen, layers);
    expect_identical(every, part);
    EXPECT_EQ(seen.held_after_forward, layers * input_bytes);
    EXPECT_EQ(seen.refused, 0);
    EXPECT_EQ(seen.held_after_backward, 0);
  }
  Llama model = llama_random(c, 7);
  model->set_activation_checkpointing(true, 2);
  EXPECT_EQ(model->activation_checkpointed_layers(), 2);
  EXPECT_FALSE(model->activation_checkpointed(0));
  EXPECT_TRUE(model->activation_checkpointed(1));
  EXPECT_FALSE(model->activation_checkpointed(2));
  EXPECT_TRUE(model->activation_checkpointed(3));
  model->set_activation_checkpointing(false, 2);
  EXPECT_EQ(model->activation_checkpointed_layers(), 0);
  EXPECT_FALSE(model->activation_checkpointed(1));
}

TEST(OffloadBudget, TakesWhatFitsAndCountsRefusals) {
  OffloadBudget b(100);
  EXPECT_TRUE(b.take(60));
  EXPECT_FALSE(b.take(41));
  EXPECT_TRUE(b.take(40));
  EXPECT_FALSE(b.take(1));
  EXPECT_EQ(b.held(), 100);
  EXPECT_EQ(b.refused(), 2);
  b.give(60);
  EXPECT_TRUE(b.take(50));
  EXPECT_EQ(b.held(), 90);
  OffloadBudget unlimited;
  EXPECT_TRUE(unlimited.take(std::int64_t{1} << 50));
  EXPECT_TRUE(unlimited.take(std::int64_t{1} << 50));
}

TEST(ActivationOffload, CpuLoraWithDropoutIsBitIdentical) {
  const LlamaConfig c = test::tiny_llama();
  const Batch b = packed_batch(c.vocab_size, 24, at::kCPU);
  const Step ckpt = train_step(c, {}, lora_with_dropout(), false, b);
  const Step off = train_step(c, {}, lora_with_dropout(), true, b);
  EXPECT_EQ(ckpt.grads.size(), 2u * 7 * static_cast<std::size_t>(c.num_layers));  // A and B of every target
  expect_identical(ckpt, off);
  // The dropout masks do draw from the RNG that the recomputation replays: another seed gives another loss.
  EXPECT_FALSE(at::equal(train_step(c, {}, lora_with_dropout(), true, b, 12).loss, off.loss));
}

// The offloaded input is a copy taken in the forward: the backward does not read the caller's tensor (without the
// offload, saving x itself, the same in-place change makes autograd refuse the backward). Through the model's
// run_block, so the setting is seen to reach the layers.
TEST(ActivationOffload, KeepsACopyOfTheLayerInput) {
  const LlamaConfig c = test::tiny_llama();
  Llama model = llama_random(c, 7);
  model->set_activation_checkpointing(true);
  DecoderBlockImpl& block = *model->block(0);
  const RopeCache rope = model->rope(6, at::kCPU, at::kFloat);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor x0 = at::randn({2, 6, c.hidden_size}, gen);
  const at::Tensor g = at::randn({2, 6, c.hidden_size}, gen);

  at::Tensor x = x0.clone().requires_grad_(true);
  activation_checkpoint_forward(block, x, rope, {}, /*offload=*/false).backward(g);
  const at::Tensor want = x.grad().clone();

  for (const bool offload : {true, false}) {
    SCOPED_TRACE(offload ? "offload" : "saved on the device");
    model->set_activation_offload(offload);
    x = x0.clone().requires_grad_(true);
    const at::Tensor out = model->run_block(0, x, rope);
    {
      at::NoGradGuard no_grad;
      x.add_(1);
    }
    if (offload) {
      out.backward(g);
      EXPECT_TRUE(at::equal(x.grad(), want));
    } else {
      EXPECT_THROW(out.backward(g), c10::Error);
    }
  }
}

// An input over 1 MiB goes to the host in power-of-two pieces (core/pinned_bytes.h), here two (1 MiB and the rest),
// and comes back whole: the same gradients as keeping it, bit for bit. The CPU runs the device path's split and join.
TEST(ActivationOffload, AnInputOverAMebibyteGoesInPieces) {
  LlamaConfig c = test::tiny_llama();
  c.hidden_size = 256;
  Llama model = llama_random(c, 7);
  DecoderBlockImpl& block = *model->block(0);
  const std::int64_t seq = 600;
  const RopeCache rope = model->rope(seq, at::kCPU, at::kFloat);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor x0 = at::randn({2, seq, c.hidden_size}, gen);
  const at::Tensor g = at::randn({2, seq, c.hidden_size}, gen);
  ASSERT_EQ(pinned_pieces(static_cast<std::int64_t>(x0.nbytes())).size(), 2u);
  std::vector<at::Tensor> grads;
  for (const bool offload : {false, true}) {
    const at::Tensor x = x0.clone().requires_grad_(true);
    auto budget = std::make_shared<OffloadBudget>();
    const at::Tensor out = activation_checkpoint_forward(block, x, rope, {}, offload, budget);
    EXPECT_EQ(budget->held(), offload ? static_cast<std::int64_t>(x0.nbytes()) : 0);
    out.backward(g);
    EXPECT_EQ(budget->held(), 0);
    grads.push_back(x.grad());
  }
  EXPECT_TRUE(at::equal(grads[0], grads[1]));
}

#ifdef RANKTUNE_HAVE_CUDA

// A model big enough that its layer inputs are whole allocator blocks, small enough for a quick test.
LlamaConfig gpu_config() {
  LlamaConfig c = test::tiny_llama();
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 32;
  c.max_position_embeddings = 512;
  return c;
}

class ActivationOffloadGpu : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  }
  const at::Device gpu{at::kCUDA, 0};
};

// The recomputation reads the input back from the host; the copy itself is exact, but attention's backward adds with
// atomics, so two runs of the baseline may differ in the last bits; then the offload may differ about as much.
TEST_P(ActivationOffloadGpu, EqualsCheckpointingAlone) {
  const LlamaConfig c = gpu_config();
  const at::TensorOptions options = at::TensorOptions().device(gpu).dtype(GetParam());
  const Batch b = packed_batch(c.vocab_size, 256, gpu);
  for (const auto& lora : {std::optional<LoraConfig>(), std::optional<LoraConfig>(lora_with_dropout())}) {
    SCOPED_TRACE(lora ? "LoRA with dropout" : "full fine-tune");
    const Step a1 = train_step(c, options, lora, false, b);
    const Step a2 = train_step(c, options, lora, false, b);
    const Step off = train_step(c, options, lora, true, b);
    if (at::equal(a2.loss, a1.loss))  // the forward has no atomics, but only the baseline can say so
      EXPECT_TRUE(at::equal(off.loss, a1.loss)) << off.loss.item<double>() << " vs " << a1.loss.item<double>();
    const double noise = test::rel_error(a2.flat(), a1.flat());
    const double err = test::rel_error(off.flat(), a1.flat());
    std::cout << "  " << c10::toString(GetParam()) << (lora ? " LoRA" : " full") << ": gradient rel err " << err
              << " (baseline run to run " << noise << ")\n";
    // A nondeterministic baseline: as far from it as its own repeat, with a floor of a few roundings of the dtype (a
    // stale or torn input would be off by far more).
    const double floor = GetParam() == at::kFloat ? 1e-5 : 1e-2;
    if (noise == 0) expect_identical(a1, off);
    else EXPECT_LE(err, std::max(4 * noise, floor));
  }
}

// On a GPU the cap counts what the caching host allocator pins, a power-of-two block per input piece (pinned_bytes.h),
// and gets it all back after the backward; a cap of two such blocks offloads two layers.
TEST_P(ActivationOffloadGpu, TheHostCapCountsPinnedBlocks) {
  const LlamaConfig c = gpu_config();
  const at::TensorOptions options = at::TensorOptions().device(gpu).dtype(GetParam());
  const Batch b = packed_batch(c.vocab_size, 200, gpu);  // inputs of 2 x 200 x 256: not a power of two
  const std::int64_t asked = 2 * 200 * c.hidden_size * static_cast<std::int64_t>(c10::elementSize(GetParam()));
  const std::int64_t block = pinned_block_bytes(asked);
  ASSERT_GT(block, asked);
  BudgetSeen all, two;
  const Step a = train_step(c, options, std::nullopt, true, b, 11, std::numeric_limits<std::int64_t>::max(), &all);
  EXPECT_EQ(all.held_after_forward, c.num_layers * block);
  EXPECT_EQ(all.refused, 0);
  EXPECT_EQ(all.held_after_backward, 0);
  train_step(c, options, std::nullopt, true, b, 11, 2 * block, &two);
  EXPECT_EQ(two.held_after_forward, 2 * block);
  EXPECT_EQ(two.refused, c.num_layers - 2);
  EXPECT_EQ(two.held_after_backward, 0);
  EXPECT_TRUE(a.loss.isfinite().item<bool>());
}

// An input of 2.5 MiB (not a power of two) pins 2 MiB + 512 KiB, exactly its size: the host allocator's bytes in use
// after the forward grow by the inputs, not by 4 MiB blocks; the budget counts the same and gets it back.
TEST_P(ActivationOffloadGpu, TheOffloadPinsItsPiecesExactly) {
  LlamaConfig c = gpu_config();
  c.max_position_embeddings = 4096;
  const auto element = static_cast<std::int64_t>(c10::elementSize(GetParam()));
  const std::int64_t asked = 5 * (std::int64_t{1} << 19), seq = asked / (2 * c.hidden_size * element);
  ASSERT_EQ(pinned_pieces(asked), (std::vector<std::int64_t>{std::int64_t{1} << 21, std::int64_t{1} << 19}));
  const Batch b = packed_batch(c.vocab_size, seq, gpu);
  Llama model = llama_random(c, 7, at::TensorOptions().device(gpu).dtype(GetParam()));
  model->set_activation_checkpointing(true);
  model->set_activation_offload(true);
  auto pinned = [] {
    at::getHostAllocator(at::kCUDA)->empty_cache();
    return at::getHostAllocator(at::kCUDA)->get_stats().allocated_bytes.current;
  };
  const std::int64_t before = pinned();
  const at::Tensor logits = model->forward(b.tokens, b.positions, b.documents);
  torch::cuda::synchronize();
  EXPECT_EQ(pinned() - before, c.num_layers * asked);
  EXPECT_EQ(model->offload_budget().held(), c.num_layers * asked);
  causal_lm_loss(logits, b.labels).backward();
  torch::cuda::synchronize();
  EXPECT_EQ(model->offload_budget().held(), 0);
  EXPECT_EQ(pinned(), before);
}

// Without the offload every layer's input stays allocated on the device from its forward to its backward; with it
// none does (the output of the last layer is the final norm's input either way). After the backward both hold the
// same: no input brought back early (each layer's backward prefetches the one before it) outlives its layer, and no
// pinned host copy either.
TEST_P(ActivationOffloadGpu, FreesTheLayerInputsOnTheDevice) {
  const LlamaConfig c = gpu_config();
  const std::int64_t seq = 512;
  const Batch b = packed_batch(c.vocab_size, seq, gpu);
  const std::int64_t input_bytes = 2 * seq * c.hidden_size * static_cast<std::int64_t>(c10::elementSize(GetParam()));
  auto held_after_forward = [&](bool offload) {
    Llama model = llama_random(c, 7, at::TensorOptions().device(gpu).dtype(GetParam()));
    model->set_activation_checkpointing(true);
    model->set_activation_offload(offload);
    auto allocated = [] { return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current; };
    // Pinned bytes in use: empty_cache gives every free block back to the system (a freed block once its copies'
    // events have completed), so what stays allocated is in use. (The allocator's active_bytes cannot say: torch
    // 2.11 takes a freed block with events off it by the wrong size, and one without events not at all.)
    auto pinned = [] {
      at::getHostAllocator(at::kCUDA)->empty_cache();
      return at::getHostAllocator(at::kCUDA)->get_stats().allocated_bytes.current;
    };
    const std::int64_t before = allocated(), pinned_before = pinned();
    const at::Tensor logits = model->forward(b.tokens, b.positions, b.documents);
    const std::int64_t held = allocated() - before;
    causal_lm_loss(logits, b.labels).backward();  // the offloaded inputs come back and the backward completes
    torch::cuda::synchronize();
    // Every pinned input is given back once its layer's backward has run, while the graph's output (logits) still
    // lives.
    EXPECT_EQ(pinned(), pinned_before) << "pinned host bytes in use after the backward";
    for (const auto& [name, p] : trainable_parameters(*model))
      EXPECT_TRUE(p.grad().defined() && p.grad().isfinite().all().item<bool>()) << name;
    return std::pair{held, allocated() - before};
  };
  const auto [kept, kept_after] = held_after_forward(false);
  const auto [offloaded, offloaded_after] = held_after_forward(true);
  EXPECT_EQ(offloaded_after, kept_after) << "held after the backward, with and without the offload";
  const std::int64_t saved = kept - offloaded, want = c.num_layers * input_bytes;
  std::cout << "  " << c10::toString(GetParam()) << ": held after the forward " << kept << " B, offloaded " << offloaded
            << " B; " << saved << " B less (the layers' inputs: " << want << " B)\n";
  EXPECT_GE(saved, want * 9 / 10);
  EXPECT_LE(saved, want * 11 / 10);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ActivationOffloadGpu, ::testing::Values(at::kBFloat16, at::kFloat),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

#endif

}  // namespace
}  // namespace ranktune
