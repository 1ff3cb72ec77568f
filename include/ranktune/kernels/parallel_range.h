// defines: parallel_range, a loop over [0, n) split across LibTorch's intra-op thread count, for the CPU paths of
// the kernels and exporters. Not at::parallel_for: with the PyPI LibTorch (OpenMP backend) that is an inline
// template that runs in parallel only where the including file is compiled with OpenMP, and ours are not.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace ranktune {

// f(begin, end) over [0, n) on up to at::get_num_threads() threads, at least `grain` items each (serially inside
// another parallel region). f must not throw.
template <typename F>
void parallel_range(std::int64_t n, std::int64_t grain, const F& f) {
  const std::int64_t threads =
      std::min<std::int64_t>(at::get_num_threads(),
                             (n + std::max<std::int64_t>(grain, 1) - 1) / std::max<std::int64_t>(grain, 1));
  if (threads <= 1 || at::in_parallel_region()) {
    if (n > 0) f(std::int64_t{0}, n);
    return;
  }
  const std::int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> helpers;
  for (std::int64_t t = 1; t < threads && t * chunk < n; ++t)
    helpers.emplace_back(f, t * chunk, std::min(n, (t + 1) * chunk));
  f(std::int64_t{0}, chunk);
  for (std::thread& h : helpers) h.join();
}

}  // namespace ranktune
