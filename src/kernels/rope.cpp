// The autograd op and the device dispatch: CUDA tensors use the fused kernel, others the ATen composition.
#include "ranktune/kernels/rope.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "ranktune/core/error.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "rope_cuda.h"
#endif

namespace ranktune {
namespace {

void check_args(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const bool ok = x.dim() == 4 && cos.dim() == 3 && cos.sizes() == sin.sizes() &&
                  (cos.size(0) == 1 || cos.size(0) == x.size(0)) && cos.size(1) == x.size(2) &&
                  cos.size(2) == x.size(3) && x.size(3) % 2 == 0 && cos.scalar_type() == x.scalar_type() &&
                  sin.scalar_type() == x.scalar_type() && cos.device() == x.device() && sin.device() == x.device();
  if (!ok)
    throw LibraryError(
        "rope_rotate: x must be [B, heads, T, head_dim] with an even head_dim and cos/sin [B or 1, "
        "T, head_dim] of its dtype and device");
}

// Rotates the two halves of the last dimension: [-x2, x1] forward, its transpose [x2, -x1] backward.
at::Tensor rotate_half(const at::Tensor& x, bool transpose) {
  const std::int64_t half = x.size(-1) / 2;
  const at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return transpose ? at::cat({b, -a}, -1) : at::cat({-b, a}, -1);
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rope_rotate_forward(x, cos, sin);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {rope_rotate_backward(grads[0], saved[0], saved[1]), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor rope_rotate_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_args(x, cos, sin);
#ifdef RANKTUNE_HAVE_CUDA
  if (x.is_cuda())
    return rope_rotate_cuda(x.stride(-1) == 1 ? x : x.contiguous(), cos.contiguous(), sin.contiguous(), false);
#endif
  return x * cos.unsqueeze(1) + rotate_half(x, false) * sin.unsqueeze(1);
}

at::Tensor rope_rotate_backward(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin) {
  check_args(grad, cos, sin);
#ifdef RANKTUNE_HAVE_CUDA
  if (grad.is_cuda())
    return rope_rotate_cuda(grad.stride(-1) == 1 ? grad : grad.contiguous(), cos.contiguous(), sin.contiguous(), true);
#endif
  // d/dx [x * cos + R x * sin] applied to g: g * cos + R^T (g * sin).
  return grad * cos.unsqueeze(1) + rotate_half(grad * sin.unsqueeze(1), true);
}

at::Tensor rope_rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return RopeFunction::apply(x, cos, sin);
}

}  // namespace ranktune
