#include "ranktune/model/block.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

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

Linear& DecoderBlockImpl::linear(std::string_view name) {
  const std::string_view module = decoder_linear_module(name);
  if (module == "q_proj") return self_attn->q_proj;
  if (module == "k_proj") return self_attn->k_proj;
  if (module == "v_proj") return self_attn->v_proj;
  if (module == "o_proj") return self_attn->o_proj;
  if (module == "gate_proj") return mlp->gate_proj;
  if (module == "up_proj") return mlp->up_proj;
  if (module == "down_proj") return mlp->down_proj;
  throw std::invalid_argument("DecoderBlock has no linear " + std::string(name));
}

}  // namespace ranktune
