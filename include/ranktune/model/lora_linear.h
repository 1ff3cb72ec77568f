// defines: lora_linear, the LoRA fast path: y = x W^T + b + (x A^T)(s B)^T as one autograd op over a frozen base.
// It computes in x's dtype (bf16 on GPU: A and s*B are cast per call, they are tiny, while the trainable masters stay
// fp32), adds the adapter into the base output with one in-place addmm, saves only x (the very tensor passed, so the
// one input of q, k and v is kept once) and x A^T, and its backward computes dX, dA and dB, no base weight gradient;
// and lora_swiglu_linear, the same for down_proj with the SwiGLU product recomputed in backward instead of kept.
// With `fp8` (train.fp8_matmuls) the frozen base's two matmuls, x W^T and dY W, run in FP8 e4m3 with row-wise scales
// (kernels/fp8.h; x and dY quantized per token, W per output row forward and per input column backward, in each call);
// the adapter stays in x's dtype.
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

// weight [out, in], bias [out] or undefined, lora_A [r, in], lora_B [out, r], any float dtypes (A and B are used in
// x's dtype; their gradients come back in their own). `adapter_input`, when defined, is what the adapter reads instead
// of x (x after LoRA dropout); it then gets its own gradient. Gradients of weight and bias are computed only if they
// require one (never under lora_apply, which freezes the base); `fp8` wants a frozen one.
at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, double scale, const at::Tensor& adapter_input = {}, bool fp8 = false);

// lora_linear(swiglu(gate, up), ...) for down_proj over a frozen base without dropout, saving gate and up (which the
// SwiGLU gradient needs anyway) instead of the [tokens, ffn] product: backward recomputes the product for dA. The
// largest activation of a LoRA layer is then not kept (about 1.9 GB at 1.1B, batch 4 x 2048).
at::Tensor lora_swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                              const at::Tensor& bias, const at::Tensor& lora_A, const at::Tensor& lora_B, double scale,
                              bool fp8 = false);

}  // namespace ranktune
