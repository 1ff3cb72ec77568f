// Cross entropy of logit rows, with the gradient written over the logits: one block a row. The first pass reads the
// row once and keeps a running (max, sum of exp) pair per thread, merged across the block; the second reads it again
// and writes exp(x - lse), less one at the target, in the storage dtype. Memory bound: 2 reads + 1 write of the row in
// its own dtype, where the ATen composition widens it to fp32 and makes eight passes.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdint>

#include "cross_entropy_cuda.h"
#include "ranktune/core/cuda_check.h"
#include "vec16.cuh"

namespace ranktune {
namespace {

// Merges the pair (m2, s2) into (m, s): s counts exp(x - m) over the values seen so far.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  if (top == -INFINITY) return;  // nothing seen on either side yet
  s = s * expf(m - top) + s2 * expf(m2 - top);
  m = top;
}

template <class T, int W>
__global__ void cross_entropy_rows_kernel(T* __restrict__ z, int64_t row_stride, int64_t vocab,
                                          const int64_t* __restrict__ targets, int64_t ignore_index,
                                          float* __restrict__ loss, bool grad) {
  using P = Pack<T, W>;
  T* row = z + static_cast<int64_t>(blockIdx.x) * row_stride;
  const int64_t packs = vocab / W;
  const int64_t target = targets[blockIdx.x];
  if (target == ignore_index) {
    if (threadIdx.x == 0) loss[blockIdx.x] = 0.f;
    if (grad) {
      P zero;
#pragma unroll
      for (int k = 0; k < W; ++k) zero.v[k] = static_cast<T>(0.f);
      for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) pack_store(row + p * W, zero);
    }
    return;
  }
  const bool in_range = target >= 0 && target < vocab;
  // Read before any thread can overwrite it in the second pass (which starts after the block's barriers).
  const float picked = threadIdx.x == 0 && in_range ? static_cast<float>(row[target]) : 0.f;

  float m = -INFINITY, s = 0.f;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const P x = pack_load<P>(row + p * W);
    float top = -INFINITY;
#pragma unroll
    for (int k = 0; k < W; ++k) top = fmaxf(top, static_cast<float>(x.v[k]));
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < W; ++k) sum += expf(static_cast<float>(x.v[k]) - top);
    merge(m, s, top, sum);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    merge(m, s, m2, s2);
  }
  __shared__ float warp_m[32], warp_s[32], row_lse;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    warp_m[warp] = m;
    warp_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < warps ? warp_m[lane] : -INFINITY;
    s = lane < warps ? warp_s[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      merge(m, s, m2, s2);
    }
    if (lane == 0) {
      row_lse = m + logf(s);
      // An out-of-range target has no probability: NaN, which the trainer's finite-loss check reports.
      loss[blockIdx.x] = in_range ? row_lse - picked : NAN;
    }
  }
  __syncthreads();
  if (!grad) return;
  const float lse = row_lse;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const P x = pack_load<P>(row + p * W);
    P g;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      float v = expf(static_cast<float>(x.v[k]) - lse);
      if (p * W + k == target) v -= 1.f;
      g.v[k] = static_cast<T>(v);
    }
    pack_store(row + p * W, g);
  }
}

}  // namespace

at::Tensor cross_entropy_rows_cuda_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index,
                                    bool grad) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  at::Tensor loss = at::empty({rows}, logits.options().dtype(at::kFloat));
  if (rows == 0) return loss;
  TORCH_CHECK(rows <= 0x7fffffff, "cross_entropy_rows_: too many rows for one grid: ", rows);
  const at::Tensor t = targets.contiguous();
  const unsigned threads = vocab >= 65536 ? 512 : 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "cross_entropy_rows", [&] {
    constexpr int wide = 16 / sizeof(scalar_t);
    auto* zp = logits.data_ptr<scalar_t>();
    const bool packed = vocab % wide == 0 && logits.stride(0) % wide == 0 && aligned_to(16, {zp});
    if (packed)
      cross_entropy_rows_kernel<scalar_t, wide>
          <<<static_cast<unsigned>(rows), threads, 0, stream>>>(zp, logits.stride(0), vocab, t.data_ptr<int64_t>(),
                                                                ignore_index, loss.data_ptr<float>(), grad);
    else
      cross_entropy_rows_kernel<scalar_t, 1>
          <<<static_cast<unsigned>(rows), threads, 0, stream>>>(zp, logits.stride(0), vocab, t.data_ptr<int64_t>(),
                                                                ignore_index, loss.data_ptr<float>(), grad);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return loss;
}

}  // namespace ranktune
