#include "ranktune/model/linear.h"

#include <ATen/ATen.h>

#include "ranktune/model/lora_linear.h"

namespace ranktune {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias, const at::TensorOptions& options)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}, options));
  if (has_bias) bias = register_parameter("bias", at::empty({out}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  if (!lora_A) return at::linear(x, weight, bias);
  const bool dropout = lora_dropout > 0 && is_training();
  if (!lora_reference) {
    return lora_linear(x, weight, bias, lora_A->weight, lora_B->weight, lora_scale,
                       dropout ? at::dropout(x, lora_dropout, /*train=*/true) : at::Tensor());
  }
  at::Tensor y = at::linear(x, weight, bias);
  // As PEFT does: the adapter runs in its own dtype (fp32 over a bf16 base) and the sum is rounded once.
  at::Tensor a = x.to(lora_A->weight.scalar_type());
  if (dropout) a = at::dropout(a, lora_dropout, /*train=*/true);
  at::Tensor delta = lora_B->forward(lora_A->forward(a)) * lora_scale;
  return (y + delta).to(y.scalar_type());
}

}  // namespace ranktune
