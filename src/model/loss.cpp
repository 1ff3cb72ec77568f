#include "ranktune/model/loss.h"

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>

namespace ranktune {
namespace {

std::pair<at::Tensor, at::Tensor> shifted(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 3, "logits must be [B, T, V], got ", logits.sizes());
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
              "labels must be [B, T] matching logits ", logits.sizes(), ", got ", labels.sizes());
  const std::int64_t steps = logits.size(1) - 1;
  return {logits.narrow(1, 0, steps).reshape({-1, logits.size(2)}).to(at::kFloat),
          labels.narrow(1, 1, steps).reshape({-1}).to(logits.device(), at::kLong)};
}

}  // namespace

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const auto [x, y] = shifted(logits, labels);
  return at::cross_entropy_loss(x, y, /*weight=*/{}, at::Reduction::Mean, kIgnoreIndex);
}

LossSum causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels) {
  const auto [x, y] = shifted(logits, labels);
  return {at::cross_entropy_loss(x, y, /*weight=*/{}, at::Reduction::Sum, kIgnoreIndex), (y != kIgnoreIndex).sum()};
}

at::Tensor token_loss_sum(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat),
                                targets.reshape({-1}).to(logits.device()), /*weight=*/{}, at::Reduction::Sum,
                                kIgnoreIndex);
}

}  // namespace ranktune
