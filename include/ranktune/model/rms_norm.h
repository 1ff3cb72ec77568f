// defines: RMSNorm, x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back before the weight multiplies
// it (the order transformers uses, so bf16 results round the same way). On a GPU with `fused` set (the default),
// ATen's fused kernel instead (at::rms_norm: one kernel each way, saving only x and the inverse RMS for backward,
// where the composition saves an fp32 copy of x and the normalised x); it rounds once, after the weight, so bf16
// results may differ from transformers' in the last bit. CPU always runs the composition (exact parity).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace ranktune {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(std::int64_t dim, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;
  double eps;
  bool fused = true;  // the fused kernel on CUDA; false: transformers' composition everywhere
};
TORCH_MODULE(RMSNorm);

}  // namespace ranktune
