// defines: linear_cross_entropy_sum, the summed cross entropy of logits = hidden W^T computed over chunks of rows so
// that the [tokens, vocab] logits never exist whole (issue #17: at a 128k vocabulary they dominate memory), and
// head_loss_sum, the loss of a Llama's head that picks it or the unfused reference (token_loss_sum of head()).
// Each chunk's gradient is computed in the forward pass at unit scale and scaled in backward by the incoming gradient:
// the loss is a sum, so d(g * loss) = g * d(loss), and no logits are kept or recomputed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "ranktune/model/llama.h"

namespace ranktune {

// A chunk's fp32 logits stay under this many bytes (the reference path's fp32 copy; the kernel keeps only the
// compute-dtype logits, overwritten by their gradient).
constexpr std::int64_t kLinearCrossEntropyChunkBytes = std::int64_t{256} << 20;

// Rows per chunk for a vocabulary of `vocab`: at least 1.
std::int64_t linear_cross_entropy_chunk_rows(std::int64_t vocab,
                                             std::int64_t budget_bytes = kLinearCrossEntropyChunkBytes);

// sum over rows i with targets[i] != -100 of -log softmax(hidden[i] W^T)[targets[i]], an fp32 scalar equal to
// token_loss_sum(at::linear(hidden, weight), targets). hidden [..., d] (after the final norm), weight [V, d] in the
// same dtype (the matmuls run in it, the softmax in fp32), targets [...] int64 on any device. Differentiable in hidden
// and weight (dW accumulated in fp32, then rounded once to weight's dtype); chunk_rows 0 = from the byte budget.
// fused_kernel: each chunk's softmax and gradient by kernels/cross_entropy.h's kernel (on CUDA), else by its ATen
// reference (train.kernels=eager).
at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    std::int64_t chunk_rows = 0, bool fused_kernel = true);

// The summed loss of the targets given x, the last decoder layer's output (model.hidden_states): fused when the model
// says so (set_fused_loss) and its head is a plain matmul, else token_loss_sum(model.head(x), targets).
at::Tensor head_loss_sum(LlamaImpl& model, const at::Tensor& x, const at::Tensor& targets);

}  // namespace ranktune
