// defines: the CUDA entry point behind nf4.h's dequantization (all of the weight's tensors on one GPU, checked by
// nf4_check before the call).
#pragma once

#include <ATen/core/Tensor.h>

#include "ranktune/kernels/nf4.h"

namespace ranktune {
at::Tensor nf4_dequantize_cuda(const Nf4Weight& w, at::ScalarType dtype);
}  // namespace ranktune
