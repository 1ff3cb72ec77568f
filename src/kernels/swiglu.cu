// Fused SwiGLU kernels: elementwise, memory bound; math in fp32 whatever the storage type.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "ranktune/core/cuda_check.h"
#include "swiglu_cuda.h"

namespace ranktune {
namespace {

template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = static_cast<float>(g[i]);
    const float s = 1.f / (1.f + __expf(-x));
    out[i] = static_cast<T>(x * s * static_cast<float>(u[i]));
  }
}

template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ g, const T* __restrict__ u,
                                  T* __restrict__ dg, T* __restrict__ du, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = static_cast<float>(g[i]);
    const float s = 1.f / (1.f + __expf(-x));
    const float d = static_cast<float>(dy[i]);
    const float up = static_cast<float>(u[i]);
    // d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s))
    dg[i] = static_cast<T>(d * up * s * (1.f + x * (1.f - s)));
    du[i] = static_cast<T>(d * x * s);
  }
}

dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(std::min<int64_t>(blocks, 65535 * 8)));
}

}  // namespace

at::Tensor swiglu_forward_cuda(const at::Tensor& g, const at::Tensor& u) {
  const c10::cuda::CUDAGuard guard(g.device());
  at::Tensor out = at::empty_like(g);
  const int64_t n = g.numel();
  if (n == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "swiglu_fwd", [&] {
    swiglu_fwd_kernel<scalar_t>
        <<<grid_for(n), 256, 0, stream>>>(g.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n);
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
    swiglu_bwd_kernel<scalar_t><<<grid_for(n), 256, 0, stream>>>(dy.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                                                 u.data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(),
                                                                 du.data_ptr<scalar_t>(), n);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return {dg, du};
}

}  // namespace ranktune
