// defines: cross_entropy_rows_, the per-row cross entropy of a block of logits that, when asked, overwrites the
// logits with their gradient (softmax - one-hot, rounded once to the logits' dtype) — the step of the chunked linear
// cross-entropy between its two matmuls (model/linear_cross_entropy.h) — and cross_entropy_rows_reference_, the ATen
// composition it replaces. On CUDA one kernel reads each row twice and writes it once in the logits' dtype; the
// reference widens the chunk to fp32 and runs eight elementwise and reduction passes over it (issue #17's profile:
// about 6 ms of the 1.1B full step).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ranktune {

// logits [rows, V] (fp32, bf16 or fp16; unit last stride), targets [rows] int64 on the same device. Returns fp32
// [rows]: logsumexp(logits[i]) - logits[i, targets[i]], 0 where targets[i] == ignore_index. With grad, logits[i] is
// replaced by d(loss[i])/d(logits[i]) = softmax(logits[i]) - one_hot(targets[i]) (a zero row where ignored); the
// math runs in fp32 whatever the storage. CUDA tensors use the kernel, others the reference.
at::Tensor cross_entropy_rows_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index, bool grad);

// The ATen composition (train.kernels=eager, and every CPU run): logsumexp, gather, and for the gradient sub, exp,
// scatter_add and a mask over an fp32 copy, copied back into logits.
at::Tensor cross_entropy_rows_reference_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index,
                                         bool grad);

}  // namespace ranktune
