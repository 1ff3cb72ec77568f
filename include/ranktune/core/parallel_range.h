// defines: parallel_range, a loop over [0, n) split across a given number of std::threads, for the CPU paths of the
// kernels, exporters and checkpoint files (callers pass at::get_num_threads(), the rank's intra-op thread count). Not
// at::parallel_for: with the PyPI LibTorch (OpenMP backend) that is an inline template that runs in parallel only
// where the including file is compiled with OpenMP, and ours are not.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace ranktune {

// f(begin, end) over [0, n) on up to `threads` threads (the calling one included), at least `grain` items each.
// f must not throw.
template <typename F>
void parallel_range(std::int64_t n, std::int64_t grain, int threads, const F& f) {
  const std::int64_t g = std::max<std::int64_t>(grain, 1);
  const std::int64_t used = std::min<std::int64_t>(threads, (n + g - 1) / g);
  if (used <= 1) {
    if (n > 0) f(std::int64_t{0}, n);
    return;
  }
  const std::int64_t chunk = (n + used - 1) / used;
  std::vector<std::thread> helpers;
  for (std::int64_t t = 1; t < used && t * chunk < n; ++t)
    helpers.emplace_back(f, t * chunk, std::min(n, (t + 1) * chunk));
  f(std::int64_t{0}, chunk);
  for (std::thread& h : helpers) h.join();
}

}  // namespace ranktune
