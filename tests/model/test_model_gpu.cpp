// The model on a GPU against the fp32 transformers fixtures: bf16 weights and activations within 2e-2 relative error
// (logits and loss), fp32 on the GPU within 1e-4, and a PEFT LoRA over a bf16 base. Skips without a GPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "model/model_test_util.h"
#include "ranktune/model/attention.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/rms_norm.h"
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

// Packed documents in bf16 on the GPU take the flash kernel's variable-length form (document_lengths): against
// transformers' block-diagonal mask (fixture llama_packed) and against our dense-mask path on the same weights.
TEST(GpuPacked, VarlenFlashEqualsDocumentMask) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const std::string dir = test::fixture("llama_packed");
  const SafetensorsFile ref(dir + "/reference.safetensors");
  Llama model = llama_from_pretrained(dir, at::TensorOptions().device(kGpu).dtype(at::kBFloat16));
  const at::Tensor tokens = ref.tensor("input_ids").to(kGpu), positions = ref.tensor("position_ids").to(kGpu);
  const at::Tensor documents = ref.tensor("documents");
  model->set_flash_varlen(true);
  ASSERT_EQ(attention_mask(documents, kGpu, at::kBFloat16, model->config().head_dim, true).dim(), 1);
  const at::Tensor logits = model->forward(tokens, positions, documents);
  const double err = test::rel_error(logits, ref.tensor("logits"));
  EXPECT_LE(err, 2e-2);

  // One attention layer, both forms, with gradients of its input.
  Attention attn = model->block(0)->self_attn;
  const RopeCache rope = model->rope(positions, at::kBFloat16);
  const at::Tensor x0 = at::randn({tokens.size(0), tokens.size(1), model->config().hidden_size},
                                  at::TensorOptions().device(kGpu).dtype(at::kBFloat16));
  at::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
  const at::Tensor y1 = attn->forward(x1, rope, document_lengths(documents).to(kGpu));
  const at::Tensor y2 = attn->forward(x2, rope, document_causal_mask(documents.to(kGpu)));
  const double y_err = test::rel_error(y1, y2);
  EXPECT_LE(y_err, 1e-2);
  const at::Tensor dy = at::randn_like(y1);
  y1.backward(dy);
  y2.backward(dy);
  const double dx_err = test::rel_error(x1.grad(), x2.grad());
  EXPECT_LE(dx_err, 2e-2);
  std::cout << "  varlen flash: logits rel err " << err << " vs transformers; one layer vs dense mask: y " << y_err
            << ", dx " << dx_err << "\n";
}

// RMSNorm's fused kernel (the default on GPU) against transformers' composition, bf16, forward and backward.
TEST(GpuRmsNorm, FusedEqualsComposition) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const auto opts = at::TensorOptions().device(kGpu).dtype(at::kBFloat16);
  RMSNorm fused(2048, 1e-5, opts), eager(2048, 1e-5, opts);
  eager->fused = false;
  {
    at::NoGradGuard no_grad;
    fused->weight.copy_(at::rand({2048}, opts) + 0.5);
    eager->weight.copy_(fused->weight);
  }
  const at::Tensor x0 = at::randn({4, 512, 2048}, opts) * 3;
  at::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
  const at::Tensor y1 = fused->forward(x1), y2 = eager->forward(x2);
  const at::Tensor dy = at::randn_like(y1);
  y1.backward(dy);
  y2.backward(dy);
  const double y_err = test::rel_error(y1, y2), dx_err = test::rel_error(x1.grad(), x2.grad());
  const double dw_err = test::rel_error(fused->weight.grad(), eager->weight.grad());
  EXPECT_LE(y_err, 1e-2);
  EXPECT_LE(dx_err, 1e-2);
  EXPECT_LE(dw_err, 1e-2);
  std::cout << "  fused RMSNorm vs composition: y " << y_err << ", dx " << dx_err << ", dw " << dw_err << "\n";
}

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
