// LoRA: target parsing, PEFT's initialisation (A kaiming-uniform, B zero, so the model starts equal to the base), only
// adapters trainable, merge equal to the adapted model, dropout only while training.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
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
