// defines: rope_rotate(x, cos, sin) = x * cos + rotate_half(x) * sin as one autograd op (rotary position embedding,
// the half-split convention of HF checkpoints). On CUDA one kernel each way reads x (or the gradient) once and writes
// the result once, where the composition launches five kernels forward and five backward over [B, heads, T, head_dim];
// it reads strided q/k views in place. On CPU it is the composition through ATen (exact parity with transformers).
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

// x: [B, heads, T, head_dim] (any strides with a unit last stride on CUDA); cos, sin: [B or 1, T, head_dim] in x's
// dtype. Gradients flow to x only (the tables are constants of the positions).
at::Tensor rope_rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The raw directions (exposed for tests): the rotation and its transpose (the backward of the rotation).
at::Tensor rope_rotate_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rope_rotate_backward(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ranktune
