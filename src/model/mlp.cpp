#include "ranktune/model/mlp.h"

#include "ranktune/kernels/swiglu.h"

#include <ATen/ATen.h>

namespace ranktune {

MlpImpl::MlpImpl(const LlamaConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, options));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

}  // namespace ranktune
