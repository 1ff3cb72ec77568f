// defines: Attention, causal grouped-query self-attention (HF `self_attn`: q_proj, k_proj, v_proj, o_proj) through
// at::scaled_dot_product_attention, which picks flash / cuDNN / memory-efficient kernels on GPU and math on CPU;
// and the two forms of keeping the documents packed into a row apart: document_causal_mask (block-diagonal causal
// mask) and document_lengths (cumulative lengths for the flash kernel's variable-length form).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "ranktune/model/linear.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/rope.h"

namespace ranktune {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaConfig& c, const at::TensorOptions& options);
  // [B, T, hidden] -> [B, T, hidden]. Without a mask: causal over the row (is_causal, the flash kernel on GPU). With
  // a [B, 1, T, T] bool mask (document_causal_mask): position i attends to j where mask[b, 0, i, j] is true (the
  // memory-efficient kernel on GPU, math on CPU). With int32 document lengths (document_lengths, GPU only): the
  // flash kernel's variable-length form, the same attention without a T x T mask.
  at::Tensor forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask = {});

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  bool fused_rope = true;  // the fused rotary kernel (kernels/rope.h); false: transformers' composition

 private:
  std::int64_t num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  std::string source_;
};
TORCH_MODULE(Attention);

// documents [B, T] integers (the document index of each token, train/token_data.h) -> [B, 1, T, T] bool on their
// device: true where j <= i and token j is of the same document as token i (transformers' causal mask AND its
// packed-sequence mask). An undefined tensor gives an undefined mask.
at::Tensor document_causal_mask(const at::Tensor& documents);

// documents [B, T] -> int32 [n + 1] (CPU): where each of the n documents of the flattened batch begins, then B * T:
// the cumulative lengths the flash kernel's variable-length form takes. A document never spans two rows.
at::Tensor document_lengths(const at::Tensor& documents);

// What Attention::forward takes for packed documents, made once per batch for activations of `dtype` on `device`:
// with `varlen` set (train.flash_varlen), document_lengths where the flash kernel can run (CUDA, 16-bit,
// head_dim <= 256); otherwise document_causal_mask. Documents on the host (pinned for a CUDA device: batch_tensors)
// give a mask made there and copied without a host sync; documents on a GPU are read back first (a sync).
at::Tensor attention_mask(const at::Tensor& documents, at::Device device, at::ScalarType dtype, std::int64_t head_dim,
                          bool varlen);

}  // namespace ranktune
