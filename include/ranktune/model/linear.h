// defines: Linear, y = x W^T (+ b), with an optional LoRA adapter: y += scale * B(A(dropout(x))), through the fused
// autograd op of lora_linear.h, or PEFT's unfused order (adapter in its own dtype) when `lora_reference` is set.
// The adapter lives in child modules `lora_A` and `lora_B` so that parameter names match PEFT's
// (`...q_proj.lora_A.weight`); lora.h attaches, merges and lists them. Weights are allocated, not initialised.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace ranktune {

class LinearImpl;
TORCH_MODULE(Linear);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  std::int64_t in_features;
  std::int64_t out_features;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined when the layer has none

  // LoRA adapter; null when none is attached.
  Linear lora_A{nullptr};  // in -> r
  Linear lora_B{nullptr};  // r -> out
  double lora_scale = 0;   // alpha / r
  double lora_dropout = 0;
  bool lora_reference = false;  // the unfused path: what tests compare the fused one with, and a fallback
};

}  // namespace ranktune
