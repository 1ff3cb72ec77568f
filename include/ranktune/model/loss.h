// defines: causal_lm_loss, next-token cross entropy as transformers computes it: logits at position t predict
// labels[t + 1]; labels equal to -100 (prompt tokens, padding) are ignored; computed in fp32.
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

constexpr std::int64_t kIgnoreIndex = -100;

// Mean over the labelled next tokens of the batch (transformers' `loss`). logits [B, T, V], labels [B, T].
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

// The sum and the number of labelled next tokens, for averaging over micro-batches or ranks by token count.
struct LossSum {
  at::Tensor sum;     // fp32 scalar
  at::Tensor tokens;  // int64 scalar
};
LossSum causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels);

// Summed fp32 cross entropy against targets that are already shifted (targets[t] follows tokens[t], -100 = none):
// the trainer's packed rows. targets may live on another device than logits.
at::Tensor token_loss_sum(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace ranktune
