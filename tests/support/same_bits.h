// defines: same_bits(ours, ref), a gtest assertion that two tensors hold the same dtype, shape and bytes (on any
// device; the count of differing bytes when not): what the kernel tests that promise bit-identical results check.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

namespace ranktune::test {

inline ::testing::AssertionResult same_bits(const at::Tensor& ours, const at::Tensor& ref) {
  if (ours.scalar_type() != ref.scalar_type() || ours.sizes() != ref.sizes())
    return ::testing::AssertionFailure() << "dtype/shape " << ours.scalar_type() << ours.sizes() << " vs "
                                         << ref.scalar_type() << ref.sizes();
  const at::Tensor a = ours.cpu().contiguous().view(-1).view(at::kByte);
  const at::Tensor b = ref.cpu().contiguous().view(-1).view(at::kByte);
  if (std::memcmp(a.data_ptr(), b.data_ptr(), a.numel()) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << at::ne(a, b).sum().item<std::int64_t>() << " of " << a.numel()
                                       << " bytes differ";
}

}  // namespace ranktune::test
