// Attention over packed rows against transformers (fixture llama_packed, tests/reference/make_packed_fixture.py):
// with the document index, logits, loss and gradients equal transformers' block-diagonal causal mask of packed
// sequences (which the script checks equals each document run alone); without it they equal transformers' plain
// causal attention over the row, the behaviour of data.packing_attention = shared. The mask itself, the
// one-document case, activation checkpointing and bf16 are checked on the same batch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/model_test_util.h"
#include "ranktune/model/activation_checkpoint.h"
#include "ranktune/model/attention.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/loss.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace {

constexpr double kLogitsTol = 1e-5, kLossTol = 1e-6, kGradTol = 1e-4;

class PackedAttention : public ::testing::Test {
 protected:
  const std::string dir = test::fixture("llama_packed");
  const SafetensorsFile ref{dir + "/reference.safetensors"};
  const at::Tensor tokens = ref.tensor("input_ids");
  const at::Tensor positions = ref.tensor("position_ids");
  const at::Tensor documents = ref.tensor("documents");
};

TEST_F(PackedAttention, IsolatedEqualsTransformersDocumentMask) {
  Llama model = llama_from_pretrained(dir);
  const at::Tensor logits = model->forward(tokens, positions, documents);
  const double err = test::rel_error(logits, ref.tensor("logits"));
  EXPECT_LE(err, kLogitsTol);
  const double want = ref.tensor("loss").item<double>();
  const at::Tensor loss = causal_lm_loss(logits, ref.tensor("labels"));
  EXPECT_NEAR(loss.item<double>(), want, kLossTol * want);
  // The trainer's form: pre-shifted targets, summed then divided by the target count.
  const at::Tensor targets = ref.tensor("targets");
  const double n = (targets != kIgnoreIndex).sum().item<double>();
  EXPECT_NEAR(token_loss_sum(logits, targets).item<double>() / n, want, kLossTol * want);
  loss.backward();
  const auto params = model->named_parameters();
  int grads = 0;
  for (const auto& e : ref.entries()) {
    if (e.name.rfind("grad.", 0) != 0) continue;
    const std::string name = e.name.substr(5);
    ASSERT_TRUE(params.contains(name)) << name;
    EXPECT_LE(test::rel_error(params[name].grad(), ref.tensor(e.name)), kGradTol) << name;
    ++grads;
  }
  EXPECT_EQ(grads, 5);
  std::cout << "  isolated: logits rel err " << err << ", loss " << loss.item<double>() << " (transformers " << want
            << ")\n";
}

TEST_F(PackedAttention, SharedEqualsTransformersWithoutDocumentMask) {
  Llama model = llama_from_pretrained(dir);
  at::NoGradGuard no_grad;
  const at::Tensor logits = model->forward(tokens, positions);
  EXPECT_LE(test::rel_error(logits, ref.tensor("shared_logits")), kLogitsTol);
  const double want = ref.tensor("shared_loss").item<double>();
  EXPECT_NEAR(causal_lm_loss(logits, ref.tensor("labels")).item<double>(), want, kLossTol * want);
  // And the two differ: the fixture's later documents have targets.
  EXPECT_GT(test::rel_error(logits, ref.tensor("logits")), 1e-3);
  EXPECT_GT(std::abs(want - ref.tensor("loss").item<double>()), 1e-3);
}

TEST_F(PackedAttention, MaskIsCausalWithinEachDocument) {
  const at::Tensor docs = at::tensor({0, 0, 1, 1, 1, 2}, at::kLong).unsqueeze(0);
  const at::Tensor mask = document_causal_mask(docs);
  ASSERT_EQ(mask.sizes(), (at::IntArrayRef{1, 1, 6, 6}));
  EXPECT_EQ(mask.scalar_type(), at::kBool);
  const at::Tensor want = at::tensor({1, 0, 0, 0, 0, 0,  //
                                      1, 1, 0, 0, 0, 0,  //
                                      0, 0, 1, 0, 0, 0,  //
                                      0, 0, 1, 1, 0, 0,  //
                                      0, 0, 1, 1, 1, 0,  //
                                      0, 0, 0, 0, 0, 1})
                              .to(at::kBool)
                              .view({1, 1, 6, 6});
  EXPECT_TRUE(at::equal(mask, want));
  EXPECT_FALSE(document_causal_mask(at::Tensor()).defined());
}

// The flash kernel's form of the same layout: documents cut at index changes and at row starts (a row's first
// document continuing the previous row's index is still a new document), over the flattened batch.
TEST_F(PackedAttention, DocumentLengthsAreCumulativeOverTheFlattenedBatch) {
  const at::Tensor docs = at::tensor({0, 0, 1, 1, 1, 2, /**/ 2, 2, 3, 4, 4, 4}, at::kLong).view({2, 6});
  const at::Tensor cu = document_lengths(docs);
  EXPECT_EQ(cu.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(cu, at::tensor({0, 2, 5, 6, 8, 9, 12}, at::kInt)));
  // On the CPU (or in fp32) attention_mask is the dense mask; the lengths are the GPU's 16-bit form.
  const at::Tensor dense = attention_mask(docs, at::kCPU, at::kBFloat16, 64, /*varlen=*/true);
  EXPECT_TRUE(at::equal(dense, document_causal_mask(docs)));
  EXPECT_FALSE(attention_mask(at::Tensor(), at::kCPU, at::kFloat, 64, true).defined());
}

// One document per row: the masked path computes what the mask-free (is_causal) path does.
TEST_F(PackedAttention, OneDocumentMaskEqualsPlainCausal) {
  Llama model = llama_from_pretrained(dir);
  at::NoGradGuard no_grad;
  const at::Tensor plain = model->forward(tokens);
  const at::Tensor masked = model->forward(tokens, {}, at::zeros_like(tokens));
  EXPECT_LE(test::rel_error(masked, plain), 1e-6);
}

TEST_F(PackedAttention, ActivationCheckpointingKeepsTheMask) {
  Llama plain = llama_from_pretrained(dir);
  Llama ckpt = llama_from_pretrained(dir);
  ckpt->set_activation_checkpointing(true);
  const at::Tensor labels = ref.tensor("labels");
  const at::Tensor a = causal_lm_loss(plain->forward(tokens, positions, documents), labels);
  const at::Tensor b = causal_lm_loss(ckpt->forward(tokens, positions, documents), labels);
  EXPECT_EQ(a.item<double>(), b.item<double>());
  a.backward();
  b.backward();
  const auto want = plain->named_parameters(), got = ckpt->named_parameters();
  for (const auto& p : want) EXPECT_LE(test::rel_error(got[p.key()].grad(), p.value().grad()), 1e-6) << p.key();
  EXPECT_LE(test::rel_error(got["lm_head.weight"].grad(), ref.tensor("grad.lm_head.weight")), kGradTol);
}

TEST_F(PackedAttention, Bf16OnCpu) {
  Llama model = llama_from_pretrained(dir, at::TensorOptions().dtype(at::kBFloat16));
  at::NoGradGuard no_grad;
  const at::Tensor logits = model->forward(tokens, positions, documents);
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  EXPECT_LE(test::rel_error(logits, ref.tensor("logits")), 2e-2);
}

}  // namespace
}  // namespace ranktune
