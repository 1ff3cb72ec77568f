// defines: the CUDA entry points behind swiglu.h (contiguous tensors of one dtype on one device).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace ranktune {
at::Tensor swiglu_forward_cuda(const at::Tensor& gate, const at::Tensor& up);
std::pair<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& grad, const at::Tensor& gate,
                                                       const at::Tensor& up);
}  // namespace ranktune
