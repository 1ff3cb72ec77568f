// defines: helpers shared by the model tests: paths of the committed fixtures of tests/reference, and the norm-wise
// relative error their parity checks compare against.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ranktune::test {

inline std::string fixture(const std::string& rel) { return std::string(RANKTUNE_FIXTURES_DIR) + "/" + rel; }

// ||a - b|| / ||b|| in fp64.
inline double rel_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kCPU, at::kDouble);
  const at::Tensor y = b.detach().to(at::kCPU, at::kDouble);
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

}  // namespace ranktune::test
