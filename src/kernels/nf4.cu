// NF4 dequantization with double-quantized absmaxes: memory bound (half a byte read, two written per bf16 weight).
// A block of 256 threads takes tiles of 4096 packed bytes (8192 weights, 128 absmax blocks): one 128-bit load per
// thread brings the tile into shared memory while 128 threads compute the tile's block scales once; then each thread
// expands 4-byte words into 8 weights and writes them with one 128-bit store, a warp's stores covering 512 contiguous
// bytes. Products and sums are __fmul_rn/__fadd_rn so that nvcc cannot fuse them into an FMA: bitsandbytes and the
// CPU reference round after each operation, and the output must match them bit for bit.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "nf4_cuda.h"
#include "ranktune/core/cuda_check.h"

namespace ranktune {
namespace {

constexpr int kThreads = 256;
constexpr int kTileBytes = kThreads * 16;
constexpr int kTileWeights = kTileBytes * 2;
constexpr int kTileBlocks = kTileWeights / kNf4BlockSize;
static_assert(kNf4NestedBlockSize == kThreads, "one thread loads one entry of the 256-value nested code");

template <class T>
__device__ T to_out(float v);
template <>
__device__ float to_out<float>(float v) {
  return v;
}
template <>
__device__ __half to_out<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __nv_bfloat16 to_out<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Eight consecutive outputs (16-byte aligned): one 128-bit store for 16-bit types, two for float.
__device__ void store8(float* out, const float (&v)[8]) {
  reinterpret_cast<float4*>(out)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(out)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ void store8(__half* out, const float (&v)[8]) {
  __half2 h[4];
  for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(h);
}
__device__ void store8(__nv_bfloat16* out, const float (&v)[8]) {
  __nv_bfloat162 h[4];
  for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(h);
}

// `packed` and `out` are 16-byte aligned (checked by the caller); n > 0.
template <class T>
__global__ void __launch_bounds__(kThreads)
    nf4_dequant_kernel(const std::uint8_t* __restrict__ packed, const std::uint8_t* __restrict__ qabsmax,
                       const float* __restrict__ nested_absmax, const float* __restrict__ nested_code,
                       const float* __restrict__ code, float offset, T* __restrict__ out, std::int64_t n) {
  __shared__ __align__(16) std::uint8_t s_packed[kTileBytes];
  __shared__ float s_code[16];
  __shared__ float s_nested_code[kNf4NestedBlockSize];
  __shared__ float s_scale[kTileBlocks];
  const int tid = threadIdx.x;
  if (tid < 16) s_code[tid] = code[tid];
  s_nested_code[tid] = nested_code[tid];
  const std::int64_t blocks = (n + kNf4BlockSize - 1) / kNf4BlockSize;
  const std::int64_t bytes = (n + 1) / 2;
  const std::int64_t tiles = (n + kTileWeights - 1) / kTileWeights;
  __syncthreads();
  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const std::int64_t byte0 = tile * kTileBytes;
    const bool full = (tile + 1) * kTileWeights <= n;
    if (full) {
      reinterpret_cast<uint4*>(s_packed)[tid] = __ldg(reinterpret_cast<const uint4*>(packed + byte0) + tid);
    } else {
      for (int i = tid; i < kTileBytes; i += kThreads) s_packed[i] = byte0 + i < bytes ? packed[byte0 + i] : 0;
    }
    if (tid < kTileBlocks) {
      const std::int64_t b = tile * kTileBlocks + tid;
      if (b < blocks)
        s_scale[tid] = __fadd_rn(__fmul_rn(s_nested_code[qabsmax[b]], nested_absmax[b / kNf4NestedBlockSize]), offset);
    }
    __syncthreads();
    T* tile_out = out + tile * kTileWeights;
    if (full) {
#pragma unroll
      for (int j = 0; j < kTileBytes / 4 / kThreads; ++j) {
        const int word = j * kThreads + tid;  // 8 weights; the earlier weight of a byte is its high nibble
        const std::uint32_t bits = reinterpret_cast<const std::uint32_t*>(s_packed)[word];
        const float s = s_scale[word * 8 / kNf4BlockSize];
        float v[8];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const unsigned byte = (bits >> (8 * k)) & 0xffu;
          v[2 * k] = __fmul_rn(s_code[byte >> 4], s);
          v[2 * k + 1] = __fmul_rn(s_code[byte & 15u], s);
        }
        store8(tile_out + word * 8, v);
      }
    } else {
      for (int i = tid; i < kTileWeights && tile * kTileWeights + i < n; i += kThreads) {
        const std::uint8_t byte = s_packed[i / 2];
        const unsigned nib = (i & 1) ? byte & 15u : byte >> 4;
        tile_out[i] = to_out<T>(__fmul_rn(s_code[nib], s_scale[i / kNf4BlockSize]));
      }
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

template <class T>
void launch(const Nf4Weight& w, const at::Tensor& packed, at::Tensor& out) {
  const std::int64_t n = w.numel();
  const std::int64_t tiles = (n + kTileWeights - 1) / kTileWeights;
  // Up to 8 resident blocks of 256 threads per SM; more tiles loop, so the tables are loaded once per block.
  const std::int64_t resident = std::int64_t{8} * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const dim3 grid(static_cast<unsigned>(std::min(tiles, resident)));
  nf4_dequant_kernel<T><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      packed.data_ptr<std::uint8_t>(), w.absmax.data_ptr<std::uint8_t>(), w.nested_absmax.data_ptr<float>(),
      w.nested_quant_map.data_ptr<float>(), w.quant_map.data_ptr<float>(), w.offset,
      reinterpret_cast<T*>(out.data_ptr()), n);
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

at::Tensor nf4_dequantize_cuda(const Nf4Weight& w, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(w.packed.device());
  at::Tensor packed = w.packed.contiguous();
  if (!aligned16(packed)) packed = packed.clone();  // a view into a larger buffer; the tile loads need alignment
  Nf4Weight c = w;
  c.absmax = w.absmax.contiguous();
  c.nested_absmax = w.nested_absmax.contiguous();
  c.quant_map = w.quant_map.contiguous();
  c.nested_quant_map = w.nested_quant_map.contiguous();
  at::Tensor out = at::empty(w.shape, packed.options().dtype(dtype));
  switch (dtype) {
    case at::kBFloat16: launch<__nv_bfloat16>(c, packed, out); break;
    case at::kHalf: launch<__half>(c, packed, out); break;
    default: launch<float>(c, packed, out); break;
  }
  return out;
}

}  // namespace ranktune
