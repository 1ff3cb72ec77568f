// defines: the CUDA entry point behind cross_entropy.h, for contiguous-row logits on a GPU and int64 targets beside.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ranktune {
at::Tensor cross_entropy_rows_cuda_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index,
                                    bool grad);
}  // namespace ranktune
