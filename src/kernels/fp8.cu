// Row-wise e4m3 quantization: memory bound. Rows: one block of 256 threads a row, two passes (the absolute maximum,
// then the scaled codes; the second reads the row again, mostly from L2), 16-byte loads where the row allows.
// Columns (the transposed copy dX = dY W wants): the columns' maxima by blocks of 32 columns x 256 rows merged with
// an atomic max (non-negative floats order as their bits), then 32 x 32 tiles transposed through shared memory and
// cast. Codes are c10::Float8_e4m3fn's own conversion and every scale and quotient one IEEE division, as in the ATen
// reference (fp8.cpp), so the two agree bit for bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Float8_e4m3fn.h>

#include <cstdint>

#include "fp8_cuda.h"
#include "ranktune/core/cuda_check.h"
#include "vec16.cuh"

namespace ranktune {
namespace {

using Fp8 = c10::Float8_e4m3fn;
constexpr int kRowThreads = 256;
constexpr int kWidth = 8;  // elements a thread loads at once on the vector path
constexpr int kTile = 32;
constexpr int kTileRows = 8;  // threads a tile column: each takes kTile / kTileRows rows
constexpr int kAmaxRowsPerBlock = 256;

__device__ __forceinline__ float scale_of(float amax) { return amax > 0.f ? amax / kE4m3Max : 1.f; }

__device__ float block_max(float m) {
  __shared__ float warp_max[kRowThreads / 32];
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < kRowThreads / 32 ? warp_max[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (threadIdx.x == 0) warp_max[0] = m;
  }
  __syncthreads();
  return warp_max[0];
}

// `vectors` > 0: the row's first vectors * kWidth elements go by packs (row start and both buffers aligned).
template <class T>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t ld, int64_t cols, int64_t vectors,
                                     Fp8* __restrict__ q, float* __restrict__ scale) {
  const T* xr = x + blockIdx.x * ld;
  Fp8* qr = q + blockIdx.x * cols;
  using In = Pack<T, kWidth>;
  using Out = Pack<Fp8, kWidth>;
  float m = 0.f;
  for (int64_t i = threadIdx.x; i < vectors; i += kRowThreads) {
    const In v = pack_load<In>(xr + i * kWidth);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) m = fmaxf(m, fabsf(static_cast<float>(v.v[k])));
  }
  for (int64_t i = vectors * kWidth + threadIdx.x; i < cols; i += kRowThreads)
    m = fmaxf(m, fabsf(static_cast<float>(xr[i])));
  const float s = scale_of(block_max(m));
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
  for (int64_t i = threadIdx.x; i < vectors; i += kRowThreads) {
    const In v = pack_load<In>(xr + i * kWidth);
    Out o;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) o.v[k] = Fp8(static_cast<float>(v.v[k]) / s);
    pack_store(qr + i * kWidth, o);
  }
  for (int64_t i = vectors * kWidth + threadIdx.x; i < cols; i += kRowThreads)
    qr[i] = Fp8(static_cast<float>(xr[i]) / s);
}

// Block (kTile, kTileRows): kTile columns, kAmaxRowsPerBlock rows of them.
template <class T>
__global__ void column_amax_kernel(const T* __restrict__ w, int64_t rows, int64_t cols, float* __restrict__ amax) {
  __shared__ float part[kTileRows][kTile + 1];
  const int64_t col = blockIdx.x * static_cast<int64_t>(kTile) + threadIdx.x;
  const int64_t r0 = blockIdx.y * static_cast<int64_t>(kAmaxRowsPerBlock);
  const int64_t r1 = r0 + kAmaxRowsPerBlock < rows ? r0 + kAmaxRowsPerBlock : rows;
  float m = 0.f;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kTileRows)
      m = fmaxf(m, fabsf(static_cast<float>(w[r * cols + col])));
  part[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int y = 1; y < kTileRows; ++y) m = fmaxf(m, part[y][threadIdx.x]);
    atomicMax(reinterpret_cast<int*>(amax + col), __float_as_int(m));
  }
}

// Block (kTile, kTileRows) a kTile x kTile tile of w; q is [cols, rows].
template <class T>
__global__ void columns_cast_kernel(const T* __restrict__ w, int64_t rows, int64_t cols, const float* __restrict__ amax,
                                    Fp8* __restrict__ q, float* __restrict__ scale) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t c0 = blockIdx.x * static_cast<int64_t>(kTile), r0 = blockIdx.y * static_cast<int64_t>(kTile);
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    tile[i][threadIdx.x] = r < rows && c < cols ? static_cast<float>(w[r * cols + c]) : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kTileRows) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c >= cols) continue;
    const float s = scale_of(amax[c]);
    if (r < rows) q[c * rows + r] = Fp8(tile[threadIdx.x][i] / s);
    if (blockIdx.y == 0 && threadIdx.x == 0) scale[c] = s;
  }
}

}  // namespace

Fp8Rows fp8_quantize_rows_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0), cols = x.size(1), ld = x.stride(0);
  Fp8Rows out{at::empty({rows, cols}, x.options().dtype(at::kFloat8_e4m3fn)),
              at::empty({rows, 1}, x.options().dtype(at::kFloat))};
  if (rows == 0 || cols == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fp8_quantize_rows", [&] {
    const bool packs = ld % kWidth == 0 && cols % kWidth == 0 &&
                       aligned_to(sizeof(Pack<scalar_t, kWidth>), {x.data_ptr()}) &&
                       aligned_to(sizeof(Pack<Fp8, kWidth>), {out.q.data_ptr()});
    quantize_rows_kernel<scalar_t>
        <<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(x.data_ptr<scalar_t>(), ld, cols,
                                                                  packs ? cols / kWidth : 0, out.q.data_ptr<Fp8>(),
                                                                  out.scale.data_ptr<float>());
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return out;
}

Fp8Rows fp8_quantize_columns_cuda(const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(w.device());
  const int64_t rows = w.size(0), cols = w.size(1);
  Fp8Rows out{at::empty({cols, rows}, w.options().dtype(at::kFloat8_e4m3fn)),
              at::empty({cols, 1}, w.options().dtype(at::kFloat))};
  if (rows == 0 || cols == 0) {
    out.scale.fill_(1.f);
    return out;
  }
  const at::Tensor amax = at::zeros({cols}, w.options().dtype(at::kFloat));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kTile, kTileRows);
  const unsigned col_tiles = static_cast<unsigned>((cols + kTile - 1) / kTile);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "fp8_quantize_columns", [&] {
    column_amax_kernel<scalar_t>
        <<<dim3(col_tiles, static_cast<unsigned>((rows + kAmaxRowsPerBlock - 1) / kAmaxRowsPerBlock)), block, 0,
           stream>>>(w.data_ptr<scalar_t>(), rows, cols, amax.data_ptr<float>());
    RANKTUNE_CUDA_CHECK(cudaGetLastError());
    columns_cast_kernel<scalar_t>
        <<<dim3(col_tiles, static_cast<unsigned>((rows + kTile - 1) / kTile)), block, 0, stream>>>(
            w.data_ptr<scalar_t>(), rows, cols, amax.data_ptr<float>(), out.q.data_ptr<Fp8>(),
            out.scale.data_ptr<float>());
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return out;
}

}  // namespace ranktune
