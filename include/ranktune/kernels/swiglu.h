// defines: swiglu(gate, up) = silu(gate) * up as one autograd op. On CUDA it runs a fused kernel in each direction
// that reads gate and up once and saves only them for backward (eager PyTorch saves silu(gate) as well and launches
// three kernels forward, more backward); on CPU it is the same math through ATen.
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// The raw directions (exposed for tests): forward, and backward returning {d_gate, d_up}.
at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up);
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& up);

}  // namespace ranktune
