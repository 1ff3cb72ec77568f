// defines: the CUDA entry point behind rope.h: the rotation (transpose = false) or its transpose, for x with a unit
// last stride and contiguous tables of x's dtype on x's device.
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {
at::Tensor rope_rotate_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool transpose);
}  // namespace ranktune
