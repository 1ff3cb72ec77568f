// defines: Linear, y = x W^T (+ b), with an optional LoRA adapter: y += scale * B(A(dropout(x))), through the fused
// autograd op of lora_linear.h, or PEFT's unfused order (adapter in its own dtype) when `lora_reference` is set.
// The adapter lives in child modules `lora_A` and `lora_B` so that parameter names match PEFT's
// (`...q_proj.lora_A.weight`); lora.h attaches, merges and lists them. Weights are allocated, not initialised.
// With `weight_nf4` set (model/quantize.h) the base is 4-bit: nf4_linear / qlora_linear (nf4_linear.h) compute it.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "ranktune/kernels/nf4.h"

namespace ranktune {

class LinearImpl;
TORCH_MODULE(Linear);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);
  // forward(swiglu(gate, up)), down_proj's call: with an adapter on a frozen base (16-bit or NF4) and no dropout, the
  // op that recomputes the [tokens, ffn] SwiGLU product in backward instead of keeping it (lora_swiglu_linear,
  // qlora_swiglu_linear).
  at::Tensor forward_swiglu(const at::Tensor& gate, const at::Tensor& up);
  // QLoRA: `w` becomes the frozen base and the 16-bit weight is dropped (freed unless the caller holds it): `weight`
  // is then undefined and the parameter list skips it. set_weight is the way back (lora_merge), same parameter slot.
  void set_weight_nf4(std::shared_ptr<const Nf4Weight> w);
  void set_weight(const at::Tensor& w);
  // Module::to moves parameters and buffers; the NF4 base is neither, so these move it too (balanced stages,
  // generate on the GPU). A dtype change only changes what its dequantization returns.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  std::int64_t in_features;
  std::int64_t out_features;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined when the layer has none
  // QLoRA (model.quantize=nf4): the frozen base in 4 bits; `weight` is then undefined and no parameter.
  std::shared_ptr<const Nf4Weight> weight_nf4;

  // LoRA adapter; null when none is attached.
  Linear lora_A{nullptr};  // in -> r
  Linear lora_B{nullptr};  // r -> out
  double lora_scale = 0;   // alpha / r
  double lora_dropout = 0;
  bool lora_reference = false;  // the unfused path: what tests compare the fused one with, and a fallback
  bool lora_fp8 = false;        // the fast path's frozen base matmuls in FP8 (train.fp8_matmuls, lora_linear.h)
};

}  // namespace ranktune
