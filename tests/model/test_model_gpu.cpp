// The model on a GPU against the fp32 transformers fixtures: bf16 weights and activations within 2e-2 relative error
// (logits and loss), fp32 on the GPU within 1e-4, and a PEFT LoRA over a bf16 base. Skips without a GPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "model/model_test_util.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace {

const at::Device kGpu(at::kCUDA, 0);

void compare(LlamaImpl& model, const SafetensorsFile& ref, double tol) {
  const at::Tensor input_ids = ref.tensor("input_ids").to(kGpu);
  const at::Tensor position_ids = ref.find("position_ids") ? ref.tensor("position_ids").to(kGpu) : at::Tensor();
  const at::Tensor logits = model.forward(input_ids, position_ids);
  EXPECT_EQ(logits.device(), kGpu);
  const double logits_err = test::rel_error(logits, ref.tensor("logits"));
  EXPECT_LE(logits_err, tol);
  const at::Tensor loss = causal_lm_loss(logits, ref.tensor("labels").to(kGpu));
  const double want = ref.tensor("loss").item<double>();
  const double loss_err = std::abs(loss.item<double>() - want) / want;
  EXPECT_LE(loss_err, tol);
  loss.backward();
  for (const auto& [name, p] : trainable_parameters(model)) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(p.grad().isfinite().all().item<bool>()) << name;
  }
  std::cout << "  " << c10::toString(logits.scalar_type()) << ": logits rel err " << logits_err << ", loss rel err "
            << loss_err << "\n";
}

class GpuParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  }
};

TEST_P(GpuParity, Bf16) {
  const std::string dir = test::fixture(GetParam());
  Llama model = llama_from_pretrained(dir, at::TensorOptions().device(kGpu).dtype(at::kBFloat16));
  compare(*model, SafetensorsFile(dir + "/reference.safetensors"), 2e-2);
}

TEST_P(GpuParity, Fp32) {
  const std::string dir = test::fixture(GetParam());
  Llama model = llama_from_pretrained(dir, at::TensorOptions().device(kGpu).dtype(at::kFloat));
  compare(*model, SafetensorsFile(dir + "/reference.safetensors"), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuParity,
                         ::testing::Values("llama_gqa_untied", "llama_tied", "qwen2_bias", "llama3_rope",
                                           "mistral_head_dim"));

TEST(GpuLora, Bf16BaseFp32Adapters) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const SafetensorsFile ref(test::fixture("lora/reference.safetensors"));
  Llama model = llama_from_pretrained(test::fixture(ref.metadata().at("base")),
                                      at::TensorOptions().device(kGpu).dtype(at::kBFloat16));
  lora_load_peft(*model, test::fixture("lora"));
  EXPECT_EQ(model->block(0)->self_attn->q_proj->lora_A->weight.scalar_type(), at::kFloat);
  EXPECT_EQ(model->block(0)->self_attn->q_proj->lora_A->weight.device(), kGpu);
  compare(*model, ref, 2e-2);
}

}  // namespace
}  // namespace ranktune
