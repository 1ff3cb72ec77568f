#include "ranktune/model/mlp.h"

#include <ATen/ATen.h>

#include "ranktune/model/tiled_mlp.h"

namespace ranktune {

MlpImpl::MlpImpl(const LlamaConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, options));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  if (chunk_tokens > 0 && x.numel() / x.size(-1) > chunk_tokens) return tiled_mlp(*this, x, chunk_tokens);
  return forward_untiled(x);
}

at::Tensor MlpImpl::forward_untiled(const at::Tensor& x) {
  // gate before up, in that order: with LoRA dropout each draws its own mask from the generator.
  const at::Tensor gate = gate_proj->forward(x), up = up_proj->forward(x);
  return down_proj->forward_swiglu(gate, up);
}

}  // namespace ranktune
