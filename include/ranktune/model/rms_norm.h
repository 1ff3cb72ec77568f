// defines: RMSNorm, x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back before the weight multiplies
// it (the order transformers uses, so bf16 results round the same way).
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
};
TORCH_MODULE(RMSNorm);

}  // namespace ranktune
