// Parity with transformers and PEFT (fixtures by tests/reference/make_model_fixtures.py): fp32 CPU logits within 1e-5
// relative error, loss within 1e-6, checked gradients within 1e-4; the same for a PEFT LoRA with non-zero adapters,
// and our merge against PEFT's merge_and_unload. The bf16 path (the GPU's dtype) is checked on the CPU too, within the
// GPU test's 2e-2, so that its casts are covered where no GPU is.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/model_test_util.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace {

constexpr double kLogitsTol = 1e-5, kLossTol = 1e-6, kGradTol = 1e-4;

// Forward + loss + backward; compares everything the reference recorded.
void check_against(LlamaImpl& model, const SafetensorsFile& ref) {
  const at::Tensor input_ids = ref.tensor("input_ids");
  const at::Tensor position_ids = ref.find("position_ids") ? ref.tensor("position_ids") : at::Tensor();
  const at::Tensor logits = model.forward(input_ids, position_ids);
  const double logits_err = test::rel_error(logits, ref.tensor("logits"));
  EXPECT_LE(logits_err, kLogitsTol);
  const at::Tensor loss = causal_lm_loss(logits, ref.tensor("labels"));
  const double want = ref.tensor("loss").item<double>();
  EXPECT_LE(std::abs(loss.item<double>() - want) / std::abs(want), kLossTol) << loss.item<double>() << " vs " << want;
  loss.backward();
  const auto params = model.named_parameters();
  int grads = 0;
  for (const auto& e : ref.entries()) {
    if (e.name.rfind("grad.", 0) != 0) continue;
    const std::string name = e.name.substr(5);
    ASSERT_TRUE(params.contains(name)) << name;
    ASSERT_TRUE(params[name].grad().defined()) << name;
    EXPECT_LE(test::rel_error(params[name].grad(), ref.tensor(e.name)), kGradTol) << name;
    ++grads;
  }
  EXPECT_GE(grads, 3);
  std::cout << "  logits rel err " << logits_err << ", loss " << loss.item<double>() << " (ref " << want << "), "
            << grads << " gradients checked\n";
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogitsLossGradients) {
  const std::string dir = test::fixture(GetParam());
  Llama model = llama_from_pretrained(dir);
  check_against(*model, SafetensorsFile(dir + "/reference.safetensors"));
}

TEST_P(HfParity, Bf16OnCpu) {
  const std::string dir = test::fixture(GetParam());
  Llama model = llama_from_pretrained(dir, at::TensorOptions().dtype(at::kBFloat16));
  const SafetensorsFile ref(dir + "/reference.safetensors");
  const at::Tensor position_ids = ref.find("position_ids") ? ref.tensor("position_ids") : at::Tensor();
  const at::Tensor logits = model->forward(ref.tensor("input_ids"), position_ids);
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  EXPECT_LE(test::rel_error(logits, ref.tensor("logits")), 2e-2);
  const double loss = causal_lm_loss(logits, ref.tensor("labels")).item<double>();
  EXPECT_NEAR(loss, ref.tensor("loss").item<double>(), 2e-2 * loss);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity,
                         ::testing::Values("llama_gqa_untied", "llama_tied", "qwen2_bias", "llama3_rope",
                                           "mistral_head_dim"));

TEST(HfParity, PeftLoraAndMerge) {
  const SafetensorsFile ref(test::fixture("lora/reference.safetensors"));
  Llama model = llama_from_pretrained(test::fixture(ref.metadata().at("base")));
  lora_load_peft(*model, test::fixture("lora"));
  EXPECT_EQ(trainable_parameters(*model).size(), 2u * 7 * 2);
  check_against(*model, ref);
  for (const auto& p : model->named_parameters()) {
    if (p.key().find(".lora_") == std::string::npos) EXPECT_FALSE(p.value().grad().defined()) << p.key();
  }
  lora_merge(*model);
  at::NoGradGuard g;
  EXPECT_LE(test::rel_error(model->forward(ref.tensor("input_ids")), ref.tensor("merged_logits")), kLogitsTol);
}

TEST(HfParity, PeftLoraOverBf16Base) {
  const SafetensorsFile ref(test::fixture("lora/reference.safetensors"));
  Llama model =
      llama_from_pretrained(test::fixture(ref.metadata().at("base")), at::TensorOptions().dtype(at::kBFloat16));
  lora_load_peft(*model, test::fixture("lora"));
  const auto trainable = trainable_parameters(*model);
  for (const auto& [name, p] : trainable) EXPECT_EQ(p.scalar_type(), at::kFloat) << name;
  const at::Tensor logits = model->forward(ref.tensor("input_ids"));
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  EXPECT_LE(test::rel_error(logits, ref.tensor("logits")), 2e-2);
  causal_lm_loss(logits, ref.tensor("labels")).backward();
  const auto params = model->named_parameters();
  const std::string name = "model.layers.0.self_attn.q_proj.lora_B.weight";
  EXPECT_LE(test::rel_error(params[name].grad(), ref.tensor("grad." + name)), 5e-2);
}

}  // namespace
}  // namespace ranktune
