// Fused SwiGLU kernels: elementwise, memory bound; math in fp32 whatever the storage type.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <initializer_list>

#include "ranktune/core/cuda_check.h"
#include "swiglu_cuda.h"
#include "vec16.cuh"

namespace ranktune {
namespace {

template <class T>
__device__ __forceinline__ void swiglu_fwd_one(const T& g, const T& u, T& out) {
  const float x = static_cast<float>(g);
  const float s = 1.f / (1.f + __expf(-x));
  out = static_cast<T>(x * s * static_cast<float>(u));
}

template <class T>
__device__ __forceinline__ void swiglu_bwd_one(const T& dy, const T& g, const T& u, T& dg, T& du) {
  const float x = static_cast<float>(g);
  const float s = 1.f / (1.f + __expf(-x));
  const float d = static_cast<float>(dy);
  const float up = static_cast<float>(u);
  // d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s))
  dg = static_cast<T>(d * up * s * (1.f + x * (1.f - s)));
  du = static_cast<T>(d * x * s);
}

// 16 bytes per load and store (8 bf16 / 4 fp32 elements a thread): the scalar form reached about 1.2 TB/s of an
// H100's 3.35 (docs/benchmarks.md, the #17 profile). Every thread first takes whole vectors (when `vectors` > 0: all
// pointers 16-byte aligned), then the elements past them one by one.
template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ out, int64_t n,
                                  int64_t vectors) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  using V = Vec16<T>;
  for (int64_t i = first; i < vectors; i += stride) {
    const V gv = pack_load<V>(g + i * V::n), uv = pack_load<V>(u + i * V::n);
    V ov;
#pragma unroll
    for (int k = 0; k < V::n; ++k) swiglu_fwd_one(gv.v[k], uv.v[k], ov.v[k]);
    pack_store(out + i * V::n, ov);
  }
  for (int64_t i = vectors * V::n + first; i < n; i += stride) swiglu_fwd_one(g[i], u[i], out[i]);
}

template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ g, const T* __restrict__ u,
                                  T* __restrict__ dg, T* __restrict__ du, int64_t n, int64_t vectors) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  using V = Vec16<T>;
  for (int64_t i = first; i < vectors; i += stride) {
    const V dv = pack_load<V>(dy + i * V::n), gv = pack_load<V>(g + i * V::n), uv = pack_load<V>(u + i * V::n);
    V dgv, duv;
#pragma unroll
    for (int k = 0; k < V::n; ++k) swiglu_bwd_one(dv.v[k], gv.v[k], uv.v[k], dgv.v[k], duv.v[k]);
    pack_store(dg + i * V::n, dgv);
    pack_store(du + i * V::n, duv);
  }
  for (int64_t i = vectors * V::n + first; i < n; i += stride) swiglu_bwd_one(dy[i], g[i], u[i], dg[i], du[i]);
}

// Whole 16-byte vectors in n elements when every pointer is 16-byte aligned, else 0 (all elementwise).
template <class T>
int64_t vector_count(int64_t n, std::initializer_list<const void*> pointers) {
  return aligned_to(16, pointers) ? n / Vec16<T>::n : 0;
}

dim3 grid_for(int64_t work) {
  const int64_t blocks = (work + 255) / 256;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8))));
}

}  // namespace

at::Tensor swiglu_forward_cuda(const at::Tensor& g, const at::Tensor& u) {
  const c10::cuda::CUDAGuard guard(g.device());
  at::Tensor out = at::empty_like(g);
  const int64_t n = g.numel();
  if (n == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "swiglu_fwd", [&] {
    const int64_t vectors = vector_count<scalar_t>(n, {g.data_ptr(), u.data_ptr(), out.data_ptr()});
    swiglu_fwd_kernel<scalar_t>
        <<<grid_for(vectors > 0 ? vectors : n), 256, 0, stream>>>(g.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                                                  out.data_ptr<scalar_t>(), n, vectors);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return out;
}

std::pair<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& dy, const at::Tensor& g, const at::Tensor& u) {
  const c10::cuda::CUDAGuard guard(g.device());
  at::Tensor dg = at::empty_like(g), du = at::empty_like(u);
  const int64_t n = g.numel();
  if (n == 0) return {dg, du};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "swiglu_bwd", [&] {
    const int64_t vectors =
        vector_count<scalar_t>(n, {dy.data_ptr(), g.data_ptr(), u.data_ptr(), dg.data_ptr(), du.data_ptr()});
    swiglu_bwd_kernel<scalar_t>
        <<<grid_for(vectors > 0 ? vectors : n), 256, 0, stream>>>(dy.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                                                  u.data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(),
                                                                  du.data_ptr<scalar_t>(), n, vectors);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return {dg, du};
}

}  // namespace ranktune
