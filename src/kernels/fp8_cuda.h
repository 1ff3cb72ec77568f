// defines: the CUDA entry points behind fp8.h (2-D tensors with contiguous rows on one device).
#pragma once

#include "ranktune/kernels/fp8.h"

namespace ranktune {
Fp8Rows fp8_quantize_rows_cuda(const at::Tensor& x);
Fp8Rows fp8_quantize_columns_cuda(const at::Tensor& w);
}  // namespace ranktune
