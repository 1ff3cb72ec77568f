#include "ranktune/model/linear.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"
#include "ranktune/kernels/swiglu.h"
#include "ranktune/model/lora_linear.h"
#include "ranktune/model/nf4_linear.h"

namespace ranktune {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias, const at::TensorOptions& options)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}, options));
  if (has_bias) bias = register_parameter("bias", at::empty({out}, options));
}

void LinearImpl::set_weight_nf4(std::shared_ptr<const Nf4Weight> w) {
  if (!w || w->shape != std::vector<std::int64_t>{out_features, in_features})
    throw LibraryError("set_weight_nf4: a weight of shape " +
                       (w ? c10::str(at::IntArrayRef(w->shape)) : std::string("(none)")) + " for a linear of " +
                       std::to_string(in_features) + " -> " + std::to_string(out_features));
  weight_nf4 = std::move(w);
  // An undefined parameter is torch's "None": named_parameters(), to() and the optimizer skip it.
  parameters_["weight"] = at::Tensor();
  weight = at::Tensor();
}

void LinearImpl::set_weight(const at::Tensor& w) {
  if (w.sizes() != at::IntArrayRef{out_features, in_features})
    throw LibraryError("set_weight: a weight of shape " + c10::str(w.sizes()) + " for a linear of " +
                       std::to_string(in_features) + " -> " + std::to_string(out_features));
  weight_nf4.reset();
  parameters_["weight"] = w;
  weight = w;
}

void LinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  if (!weight_nf4) return;
  Nf4Weight w = weight_nf4->to(device);
  w.dtype = dtype;
  weight_nf4 = std::make_shared<const Nf4Weight>(std::move(w));
}

void LinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  if (!weight_nf4) return;
  Nf4Weight w = *weight_nf4;
  w.dtype = dtype;
  weight_nf4 = std::make_shared<const Nf4Weight>(std::move(w));
}

void LinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  if (weight_nf4) weight_nf4 = std::make_shared<const Nf4Weight>(weight_nf4->to(device));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  const bool dropout = lora_A && lora_dropout > 0 && is_training();
  if (weight_nf4) {
    const Nf4Weight& w = *weight_nf4;
    if (!lora_A) return nf4_linear(x, w, bias);
    if (!lora_reference) {
      return qlora_linear(x, w, bias, lora_A->weight, lora_B->weight, lora_scale,
                          dropout ? at::dropout(x, lora_dropout, /*train=*/true) : at::Tensor());
    }
  } else {
    if (!lora_A) return at::linear(x, weight, bias);
    if (!lora_reference) {
      return lora_linear(x, weight, bias, lora_A->weight, lora_B->weight, lora_scale,
                         dropout ? at::dropout(x, lora_dropout, /*train=*/true) : at::Tensor(), lora_fp8);
    }
  }
  at::Tensor y = weight_nf4 ? nf4_linear(x, *weight_nf4, bias) : at::linear(x, weight, bias);
  // As PEFT does: the adapter runs in its own dtype (fp32 over a bf16 base) and the sum is rounded once.
  at::Tensor a = x.to(lora_A->weight.scalar_type());
  if (dropout) a = at::dropout(a, lora_dropout, /*train=*/true);
  at::Tensor delta = lora_B->forward(lora_A->forward(a)) * lora_scale;
  return (y + delta).to(y.scalar_type());
}

at::Tensor LinearImpl::forward_swiglu(const at::Tensor& gate, const at::Tensor& up) {
  const bool fast = lora_A && !lora_reference && !(lora_dropout > 0 && is_training());
  if (fast && weight_nf4)
    return qlora_swiglu_linear(gate, up, *weight_nf4, bias, lora_A->weight, lora_B->weight, lora_scale);
  if (fast && weight.defined() && !weight.requires_grad())
    return lora_swiglu_linear(gate, up, weight, bias, lora_A->weight, lora_B->weight, lora_scale, lora_fp8);
  return forward(swiglu(gate, up));
}

}  // namespace ranktune
