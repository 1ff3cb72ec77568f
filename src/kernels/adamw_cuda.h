// defines: the CUDA entry point behind adamw.h (one tensor, arguments checked by the caller).
#pragma once

#include <ATen/core/Tensor.h>

#include "adamw_math.h"

namespace ranktune {
void adamw_master_step_cuda(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& master,
                            const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, const at::Tensor& step,
                            const AdamWScalars& scalars, const float* grad_scale);
}  // namespace ranktune
