// defines: Attention, causal grouped-query self-attention (HF `self_attn`: q_proj, k_proj, v_proj, o_proj) through
// at::scaled_dot_product_attention, which picks flash / cuDNN / memory-efficient kernels on GPU and math on CPU.
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
  at::Tensor forward(const at::Tensor& x, const RopeCache& rope);  // [B, T, hidden] -> [B, T, hidden]

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  std::int64_t num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  std::string source_;
};
TORCH_MODULE(Attention);

}  // namespace ranktune
