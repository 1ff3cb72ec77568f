#include "ranktune/model/rms_norm.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

namespace ranktune {

RMSNormImpl::RMSNormImpl(std::int64_t dim, double eps_, const at::TensorOptions& options) : eps(eps_) {
  weight = register_parameter("weight", at::empty({dim}, options));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  RECORD_FUNCTION("ranktune::rms_norm", c10::ArrayRef<const c10::IValue>{});  // a named row in profile tables
  if (fused && x.is_cuda()) return at::rms_norm(x, {weight.size(0)}, weight, eps);
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

}  // namespace ranktune
