// defines: Attention, causal grouped-query self-attention (HF `self_attn`: q_proj, k_proj, v_proj, o_proj) through
// at::scaled_dot_product_attention, which picks flash / cuDNN / memory-efficient kernels on GPU and math on CPU;
// and document_causal_mask, the block-diagonal causal mask that keeps the documents packed into a row apart.
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
  // one (document_causal_mask): position i attends to j where mask[b, 0, i, j] is true (on GPU the memory-efficient
  // kernel, which takes a mask; a varlen flash path over cumulative document lengths would be faster).
  at::Tensor forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask = {});

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  std::int64_t num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  std::string source_;
};
TORCH_MODULE(Attention);

// documents [B, T] integers (the document index of each token, train/token_data.h) -> [B, 1, T, T] bool on their
// device: true where j <= i and token j is of the same document as token i (transformers' causal mask AND its
// packed-sequence mask). An undefined tensor gives an undefined mask.
at::Tensor document_causal_mask(const at::Tensor& documents);

}  // namespace ranktune
