#include "ranktune/train/grads.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <map>
#include <string>
#include <vector>

namespace ranktune {
namespace {

// Gradients grouped by device (foreach kernels take one device per call), in first-seen order of devices.
std::vector<std::vector<at::Tensor>> grads_by_device(const NamedTensors& params) {
  std::map<std::string, std::size_t> index;
  std::vector<std::vector<at::Tensor>> groups;
  for (const auto& item : params) {
    const at::Tensor& g = item.value().grad();
    if (!g.defined()) continue;
    auto [it, added] = index.try_emplace(g.device().str(), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(g);
  }
  return groups;
}

at::Tensor total_norm(const std::vector<std::vector<at::Tensor>>& groups) {
  std::vector<at::Tensor> per_device;
  for (const auto& grads : groups) {
    const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2, at::kFloat);
    per_device.push_back(at::linalg_vector_norm(at::stack(norms), 2).to(groups.front().front().device()));
  }
  return at::linalg_vector_norm(at::stack(per_device), 2);
}

}  // namespace

at::Tensor grad_norm_tensor(const NamedTensors& params) {
  at::NoGradGuard no_grad;
  const auto groups = grads_by_device(params);
  if (groups.empty()) return at::zeros({}, at::kFloat);
  return total_norm(groups);
}

at::Tensor clip_coefficient(const at::Tensor& norm, double max_norm) {
  return at::clamp_max(max_norm / (norm + 1e-6), 1.0);
}

at::Tensor clip_grad_norm_tensor(const NamedTensors& params, double max_norm) {
  at::NoGradGuard no_grad;
  const at::Tensor norm = grad_norm_tensor(params);
  if (max_norm > 0) {
    // Always multiplied, never branched on: no host sync before the scaling, as torch does.
    const at::Tensor coef = clip_coefficient(norm, max_norm);
    for (const auto& grads : grads_by_device(params)) at::_foreach_mul_(grads, coef.to(grads.front().device()));
  }
  return norm;
}

double grad_norm(const NamedTensors& params) { return clip_grad_norm_tensor(params, 0).item<double>(); }

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  return clip_grad_norm_tensor(params, max_norm).item<double>();
}

void zero_grads(const NamedTensors& params) {
  at::NoGradGuard no_grad;
  for (const auto& grads : grads_by_device(params)) at::_foreach_zero_(grads);
}

void release_grads(const NamedTensors& params) {
  for (const auto& item : params) item.value().mutable_grad() = at::Tensor();
}

}  // namespace ranktune
