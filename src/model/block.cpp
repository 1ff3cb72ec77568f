#include "ranktune/model/block.h"

#include <ATen/ATen.h>

namespace ranktune {

DecoderBlockImpl::DecoderBlockImpl(const LlamaConfig& c, const at::TensorOptions& options) {
  self_attn = register_module("self_attn", Attention(c, options));
  mlp = register_module("mlp", Mlp(c, options));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask) {
  const at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), rope, mask);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

}  // namespace ranktune
