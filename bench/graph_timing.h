// defines: seconds_per_call(op, replays), the GPU time of one call of `op`: a CUDA graph of kCallsPerGraph calls
// replayed `replays` times after one warm-up replay, so that the host's launch cost does not hide short kernels.
// Shared by the kernel benchmarks (nf4_dequant_bench.cpp, fp8_gemm_bench.cpp).
#pragma once

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <functional>

#include "ranktune/core/cuda_check.h"

namespace ranktune::bench {

inline constexpr int kCallsPerGraph = 10;

inline double seconds_per_call(const std::function<void()>& op, int replays) {
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  const c10::cuda::CUDAStreamGuard guard(stream);
  op();  // first use outside the capture: lazy initialisation, allocator warm-up
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  for (int i = 0; i < kCallsPerGraph; ++i) op();
  graph.capture_end();
  graph.replay();
  cudaEvent_t start, stop;
  RANKTUNE_CUDA_CHECK(cudaEventCreate(&start));
  RANKTUNE_CUDA_CHECK(cudaEventCreate(&stop));
  RANKTUNE_CUDA_CHECK(cudaEventRecord(start, stream.stream()));
  for (int r = 0; r < replays; ++r) graph.replay();
  RANKTUNE_CUDA_CHECK(cudaEventRecord(stop, stream.stream()));
  RANKTUNE_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  RANKTUNE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  RANKTUNE_CUDA_CHECK(cudaEventDestroy(start));
  RANKTUNE_CUDA_CHECK(cudaEventDestroy(stop));
  return ms / 1e3 / (static_cast<double>(replays) * kCallsPerGraph);
}

}  // namespace ranktune::bench
