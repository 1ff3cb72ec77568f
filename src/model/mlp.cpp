#include "ranktune/model/mlp.h"

#include "ranktune/kernels/swiglu.h"
#include "ranktune/model/lora_linear.h"
#include "ranktune/model/nf4_linear.h"

#include <ATen/ATen.h>

namespace ranktune {

MlpImpl::MlpImpl(const LlamaConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, options));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  const at::Tensor gate = gate_proj->forward(x), up = up_proj->forward(x);
  const LinearImpl& down = *down_proj;
  // LoRA on a frozen base (16-bit or NF4) without dropout: the SwiGLU product is recomputed in backward, not kept.
  const bool fast = down.lora_A && !down.lora_reference && !(down.lora_dropout > 0 && is_training());
  if (fast && down.weight_nf4) {
    return qlora_swiglu_linear(gate, up, *down.weight_nf4, down.bias, down.lora_A->weight, down.lora_B->weight,
                               down.lora_scale);
  }
  if (fast && down.weight.defined() && !down.weight.requires_grad()) {
    return lora_swiglu_linear(gate, up, down.weight, down.bias, down.lora_A->weight, down.lora_B->weight,
                              down.lora_scale);
  }
  return down_proj->forward(swiglu(gate, up));
}

}  // namespace ranktune
