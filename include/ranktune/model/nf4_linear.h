// defines: nf4_linear, y = x deq(W)^T (+ b) over a frozen NF4 base weight (kernels/nf4.h) as an autograd op: backward
// dequantizes W again for dX = dY deq(W) and gives W no gradient, so the 16-bit weight exists only inside each call
// and never across a step (QLoRA; what bitsandbytes' Linear4bit does). LoRA adds its adapter on top of the result.
#pragma once

#include <ATen/core/Tensor.h>

#include "ranktune/kernels/nf4.h"

namespace ranktune {

// The weight is dequantized to x's dtype on x's device (w must live there). `bias` (optional) is added as is and gets
// its gradient if it requires one.
at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias = {});

}  // namespace ranktune
