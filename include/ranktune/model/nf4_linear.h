// defines: nf4_linear, y = x deq(W)^T (+ b) over a frozen NF4 base weight (kernels/nf4.h) as an autograd op: backward
// dequantizes W again for dX = dY deq(W) and gives W no gradient, so the 16-bit weight exists only inside each call
// and never across a step (what bitsandbytes' Linear4bit does); and qlora_linear, the same base with the LoRA adapter
// fused in, QLoRA's fast path (lora_linear.h's op over a 4-bit base), and qlora_swiglu_linear, its down_proj form.
#pragma once

#include <ATen/core/Tensor.h>

#include "ranktune/kernels/nf4.h"

namespace ranktune {

// The weight is dequantized to w.dtype (its dtype before quantization), then cast to x's dtype where they differ, as
// bitsandbytes' matmul_4bit does; on x's device (w must live there). `bias` (optional) is added as is and gets
// its gradient if it requires one.
at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias = {});

// y = x deq(W)^T + b + (a A^T)(s B)^T with a = adapter_input if defined (x after LoRA dropout), else x: lora_linear's
// contract (same rounding order, so over deq(W) the two agree bit for bit) with W in NF4. Saved for backward: the
// adapter input (the caller's tensor), x A^T, the compute-dtype copies of A and s*B, and the quantized tensors; deq(W)
// is made again in backward, only if dX is wanted. W gets no gradient; the bias gets one if it requires one.
at::Tensor qlora_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias, const at::Tensor& lora_A,
                        const at::Tensor& lora_B, double scale, const at::Tensor& adapter_input = {});

// qlora_linear(swiglu(gate, up), ...) for down_proj without dropout, saving gate and up instead of the [tokens, ffn]
// product (lora_swiglu_linear of lora_linear.h over an NF4 weight): backward recomputes the product for dA.
at::Tensor qlora_swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const Nf4Weight& w, const at::Tensor& bias,
                               const at::Tensor& lora_A, const at::Tensor& lora_B, double scale);

}  // namespace ranktune
