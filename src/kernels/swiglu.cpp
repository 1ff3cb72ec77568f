// The autograd op and the device dispatch: CUDA tensors use the fused kernels, others the ATen composition.
#include "ranktune/kernels/swiglu.h"

#include <torch/autograd.h>

#include "ranktune/core/error.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "swiglu_cuda.h"
#endif

namespace ranktune {
namespace {

void check_pair(const at::Tensor& g, const at::Tensor& u) {
  if (g.sizes() != u.sizes() || g.scalar_type() != u.scalar_type() || g.device() != u.device())
    throw LibraryError("swiglu: gate and up must have the same shape, dtype and device");
}

class SwiGLUFunction : public torch::autograd::Function<SwiGLUFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return swiglu_forward(gate, up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dg, du] = swiglu_backward(grads[0], saved[0], saved[1]);
    return {dg, du};
  }
};

}  // namespace

at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up) {
  check_pair(gate, up);
#ifdef RANKTUNE_HAVE_CUDA
  if (gate.is_cuda()) return swiglu_forward_cuda(gate.contiguous(), up.contiguous());
#endif
  return at::silu(gate) * up;
}

std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& grad, const at::Tensor& gate,
                                                  const at::Tensor& up) {
  check_pair(gate, up);
#ifdef RANKTUNE_HAVE_CUDA
  if (gate.is_cuda()) return swiglu_backward_cuda(grad.contiguous(), gate.contiguous(), up.contiguous());
#endif
  const at::Tensor s = at::sigmoid(gate);
  return {grad * up * s * (1 + gate * (1 - s)), grad * gate * s};
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return SwiGLUFunction::apply(gate, up); }

}  // namespace ranktune
