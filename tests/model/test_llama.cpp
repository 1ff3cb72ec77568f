// The model on its own: HF parameter names and count of the tiny model, deterministic init, stages that compose to
// forward, causality, the loss helper, the sliding-window refusal, and HF directory save/load with its error reports.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "model/model_test_util.h"
#include "ranktune/core/cli.h"
#include "ranktune/core/error.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/loss.h"
#include "support/scratch_dir.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

// The model of configs/tiny.ini, the default job (not the tests' tiny_llama).
LlamaConfig tiny_ini_model() {
  return llama_config_from_model(
      config_apply(cli_read_ini(std::string(RANKTUNE_SOURCE_DIR) + "/configs/tiny.ini")).model);
}

at::Tensor tokens(std::int64_t b, std::int64_t t, std::int64_t vocab, std::uint64_t seed = 3) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, gen, at::kLong);
}

template <class E>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << needles.front();
  } catch (const E& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(Llama, TinyModelNamesAndCount) {
  Llama m = llama_random(tiny_ini_model(), 1);
  const auto params = m->named_parameters();
  // embed + 4 layers x (q, k, v, o, gate, up, down, 2 norms) + final norm; tied: no lm_head.
  ASSERT_EQ(params.size(), 1u + 4 * 9 + 1);
  const std::vector<std::string> layer0 = {
      "model.layers.0.self_attn.q_proj.weight",        "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",        "model.layers.0.self_attn.o_proj.weight",
      "model.layers.0.mlp.gate_proj.weight",           "model.layers.0.mlp.up_proj.weight",
      "model.layers.0.mlp.down_proj.weight",           "model.layers.0.input_layernorm.weight",
      "model.layers.0.post_attention_layernorm.weight"};
  EXPECT_EQ(params.keys()[0], "model.embed_tokens.weight");
  for (std::size_t i = 0; i < layer0.size(); ++i) EXPECT_EQ(params.keys()[1 + i], layer0[i]);
  EXPECT_EQ(params.keys().back(), "model.norm.weight");
  EXPECT_EQ(params["model.layers.3.self_attn.k_proj.weight"].sizes(), at::IntArrayRef({128, 256}));
  EXPECT_EQ(params["model.layers.3.mlp.down_proj.weight"].sizes(), at::IntArrayRef({256, 688}));
  std::int64_t total = 0;
  for (const auto& p : params) total += p.value().numel();
  // 259*256 + 4*(256*256*2 + 256*128*2 + 3*256*688 + 2*256) + 256
  EXPECT_EQ(total, 2968576);
  EXPECT_EQ(total, llama_parameter_count(m->config()));

  LlamaConfig untied = tiny_ini_model();
  untied.tie_word_embeddings = false;
  Llama u(untied);
  EXPECT_EQ(u->named_parameters().keys().back(), "lm_head.weight");
  EXPECT_EQ(llama_parameter_count(untied), 2968576 + 259 * 256);
}

TEST(Llama, RandomInitIsSeededAndHfShaped) {
  LlamaConfig c = test::tiny_llama();
  c.qkv_bias = true;
  Llama a = llama_random(c, 7), b = llama_random(c, 7), other = llama_random(c, 8);
  for (const auto& p : a->named_parameters()) {
    EXPECT_TRUE(at::equal(p.value(), b->named_parameters()[p.key()])) << p.key();
  }
  EXPECT_FALSE(at::equal(a->model->embed_tokens->weight, other->model->embed_tokens->weight));
  EXPECT_TRUE(at::equal(a->model->norm->weight, at::ones({32})));
  EXPECT_TRUE(at::equal(a->block(1)->self_attn->q_proj->bias, at::zeros({32})));
  EXPECT_NEAR(a->block(0)->mlp->up_proj->weight.std().item<double>(), 0.02, 0.002);
}

TEST(Llama, StagesComposeToForward) {
  Llama m = llama_random(test::tiny_llama(), 2);
  const at::Tensor x = tokens(2, 9, 50);
  const at::Tensor logits = m->forward(x);
  EXPECT_EQ(logits.sizes(), at::IntArrayRef({2, 9, 50}));
  at::Tensor h = m->embed(x);
  const RopeCache r = m->rope(9, h.device(), h.scalar_type());
  for (std::int64_t i = 0; i < m->num_layers(); ++i) h = m->block(i)->forward(h, r);
  EXPECT_TRUE(at::equal(m->head(h), logits));
  const at::Tensor pos = at::arange(9, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::allclose(m->forward(x, pos), logits, 1e-6, 1e-6));
  // Rotary attention sees relative positions only: a uniform shift changes nothing, a gap does.
  const double shifted = test::rel_error(m->forward(x, pos + 5), logits);
  const at::Tensor gap = at::where(pos >= 4, pos + 3, pos);
  const double gapped = test::rel_error(m->forward(x, gap), logits);
  EXPECT_LT(shifted, 1e-5);
  EXPECT_GT(gapped, 100 * shifted) << shifted;
}

TEST(Llama, AttentionIsCausal) {
  Llama m = llama_random(test::tiny_llama(), 3);
  at::Tensor x = tokens(1, 10, 50);
  const at::Tensor before = m->forward(x);
  x[0][6] = (x[0][6].item<std::int64_t>() + 1) % 50;
  const at::Tensor after = m->forward(x);
  EXPECT_TRUE(at::allclose(before.narrow(1, 0, 6), after.narrow(1, 0, 6), 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(before.narrow(1, 6, 4), after.narrow(1, 6, 4), 1e-4, 1e-4));
}

TEST(Llama, LossShiftsLabelsAndIgnoresMasked) {
  const at::Tensor logits = at::randn({2, 5, 11}, at::kDouble).to(at::kFloat);
  at::Tensor labels = tokens(2, 5, 11);
  labels[0][2] = kIgnoreIndex;
  labels[1][0] = kIgnoreIndex;  // position 0 is never a target anyway
  double sum = 0;
  int count = 0;
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t + 1 < 5; ++t) {
      const std::int64_t y = labels[b][t + 1].item<std::int64_t>();
      if (y == kIgnoreIndex) continue;
      const at::Tensor row = logits[b][t].to(at::kDouble);
      sum += (row.logsumexp(0) - row[y]).item<double>();
      ++count;
    }
  }
  EXPECT_NEAR(causal_lm_loss(logits, labels).item<double>(), sum / count, 1e-6);
  const LossSum s = causal_lm_loss_sum(logits, labels);
  EXPECT_EQ(s.tokens.item<std::int64_t>(), count);
  EXPECT_NEAR(s.sum.item<double>(), sum, 1e-5);
}

TEST(Llama, DtypeFromPrecision) {
  EXPECT_EQ(llama_dtype(at::Device(at::kCUDA, 1), "auto"), at::kBFloat16);
  EXPECT_EQ(llama_dtype(at::Device(at::kCPU), "auto"), at::kFloat);
  EXPECT_EQ(llama_dtype(at::Device(at::kCPU), "bf16"), at::kBFloat16);
  EXPECT_EQ(llama_dtype(at::Device(at::kCUDA, 0), "fp32"), at::kFloat);
  EXPECT_THROW(llama_dtype(at::Device(at::kCPU), "fp8"), ConfigError);
}

TEST(Llama, SlidingWindowLongerSequenceRefused) {
  LlamaConfig c = test::tiny_llama();
  c.model_type = "mistral";
  c.sliding_window = 8;
  Llama m = llama_random(c, 4);
  EXPECT_NO_THROW(m->forward(tokens(1, 8, 50)));
  expect_error<ConfigError>([&] { m->forward(tokens(1, 9, 50)); }, {"sliding window 8", "small test config"});
}

TEST(Llama, SaveAndLoadPretrained) {
  test::ScratchDir dir("llama_save");
  LlamaConfig c = test::tiny_llama();
  c.qkv_bias = true;
  c.model_type = "qwen2";
  Llama m = llama_random(c, 5);
  {
    at::NoGradGuard g;
    m->block(0)->self_attn->k_proj->bias.normal_();
  }
  llama_save_pretrained(*m, dir.str(), at::kFloat);
  Llama back = llama_from_pretrained(dir.str());
  EXPECT_EQ(back->config().model_type, "qwen2");
  EXPECT_TRUE(back->config().qkv_bias);
  const at::Tensor x = tokens(2, 6, 50);
  EXPECT_TRUE(at::equal(back->forward(x), m->forward(x)));

  llama_save_pretrained(*m, dir / "bf16");
  Llama half = llama_from_pretrained(dir / "bf16");
  EXPECT_EQ(half->config().dtype, "bfloat16");
  EXPECT_LT(test::rel_error(half->forward(x), m->forward(x)), 2e-2);
}

class HfDirErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    LlamaConfig c = test::tiny_llama();
    c.tie_word_embeddings = true;
    model = llama_random(c, 6);
    llama_save_pretrained(*model, dir.str(), at::kFloat);
    for (const auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value());
  }
  void rewrite(const std::vector<std::pair<std::string, at::Tensor>>& t) {
    safetensors_save(dir / "model.safetensors", t);
  }
  test::ScratchDir dir{"hf_errors"};
  Llama model{nullptr};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

TEST_F(HfDirErrors, MissingAndUnexpectedTensorsNamed) {
  auto t = tensors;
  t.erase(t.begin() + 3);  // model.layers.0.self_attn.v_proj.weight
  t.emplace_back("model.layers.0.self_attn.q_norm.weight", at::ones({8}));
  rewrite(t);
  expect_error<ModelDirError>([&] { llama_from_pretrained(dir.str()); },
                              {"missing model.layers.0.self_attn.v_proj.weight",
                               "unexpected model.layers.0.self_attn.q_norm.weight", dir.str()});
}

TEST_F(HfDirErrors, ShapeCheckedAgainstConfig) {
  auto t = tensors;
  t[5].second = at::zeros({47, 32});  // model.layers.0.mlp.gate_proj.weight, config says [48, 32]
  rewrite(t);
  expect_error<ModelDirError>([&] { llama_from_pretrained(dir.str()); },
                              {"model.layers.0.mlp.gate_proj.weight", "[47, 32]", "[48, 32]", "model.safetensors"});
}

TEST_F(HfDirErrors, TiedLmHeadIsAcceptedAndIgnored) {
  auto t = tensors;
  t.emplace_back("lm_head.weight", at::zeros({50, 32}));
  t.emplace_back("model.rotary_emb.inv_freq", at::ones({4}));
  rewrite(t);
  Llama back = llama_from_pretrained(dir.str());
  const at::Tensor x = tokens(1, 4, 50);
  EXPECT_TRUE(at::equal(back->forward(x), model->forward(x)));
}

TEST_F(HfDirErrors, DirectoryProblemsNamed) {
  expect_error<ModelDirError>([&] { llama_from_pretrained(dir / "nowhere"); }, {"nowhere", "does not exist"});
  std::filesystem::remove(dir / "config.json");
  expect_error<ModelDirError>([&] { llama_from_pretrained(dir.str()); }, {"has no config.json"});
  std::filesystem::remove(dir / "model.safetensors");
  expect_error<ModelDirError>([&] { HfModelDir ck(dir.str()); }, {"neither model.safetensors"});
  std::ofstream(dir / "pytorch_model.bin") << "x";
  expect_error<ModelDirError>([&] { HfModelDir ck(dir.str()); }, {"pytorch_model.bin"});
}

TEST_F(HfDirErrors, ShardedIndexChecked) {
  std::filesystem::remove(dir / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> a(tensors.begin(), tensors.begin() + 10);
  std::vector<std::pair<std::string, at::Tensor>> b(tensors.begin() + 10, tensors.end());
  safetensors_save(dir / "model-00001-of-00002.safetensors", a);
  safetensors_save(dir / "model-00002-of-00002.safetensors", b);
  std::string map;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    map += (i ? ",\"" : "\"") + tensors[i].first + "\":\"model-0000" + (i < 10 ? "1" : "2") + "-of-00002.safetensors\"";
  }
  std::ofstream(dir / "model.safetensors.index.json") << "{\"metadata\":{},\"weight_map\":{" << map << "}}";
  Llama back = llama_from_pretrained(dir.str());
  const at::Tensor x = tokens(1, 4, 50);
  EXPECT_TRUE(at::equal(back->forward(x), model->forward(x)));

  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  expect_error<ModelDirError>([&] { HfModelDir ck(dir.str()); },
                              {"model-00002-of-00002.safetensors", "does not exist"});
  safetensors_save(dir / "model-00002-of-00002.safetensors", a);  // the wrong tensors in shard 2
  expect_error<ModelDirError>([&] { HfModelDir ck(dir.str()); }, {"model.layers.1.", "does not hold it"});
}

}  // namespace
}  // namespace ranktune
