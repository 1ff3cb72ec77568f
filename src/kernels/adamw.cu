// The one-pass AdamW kernel for low-precision parameters with fp32 masters: memory bound (28 bytes a parameter),
// 4 elements a thread (8-byte loads of the bf16/fp16 tensors, 16-byte loads of the fp32 ones) where the pointers allow.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "adamw_cuda.h"
#include "ranktune/core/cuda_check.h"
#include "vec16.cuh"

namespace ranktune {
namespace {

// scale: 1 and unused unless `scaled`; the gradient then becomes T(g * scale), as ATen's mul_ writes it.
template <class T>
__device__ __forceinline__ void update_one(const T& g, T& p, float& master, float& m, float& v, const AdamWScalars& s,
                                           const AdamWCorrections& c, bool scaled, float scale) {
  const float gf = scaled ? static_cast<float>(static_cast<T>(static_cast<float>(g) * scale)) : static_cast<float>(g);
  adamw_update(gf, master, m, v, s, c);
  p = static_cast<T>(master);
}

// The step count and the gradient scale are read on the device (torch's fused kernel does the same): the host never
// waits for them. ATen's mul_ of a T tensor by an fp32 scalar tensor on the GPU casts the scalar to T first.
template <class T>
__global__ void adamw_master_kernel(T* __restrict__ param, const T* __restrict__ grad, float* __restrict__ master,
                                    float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                                    const float* __restrict__ step, const float* __restrict__ grad_scale,
                                    AdamWScalars s, int64_t n, int64_t vectors) {
  const AdamWCorrections c = adamw_corrections(s, *step);
  const bool scaled = grad_scale != nullptr;
  const float scale = scaled ? static_cast<float>(static_cast<T>(*grad_scale)) : 1.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  using P = Pack<T, 4>;
  using F = Pack<float, 4>;
  for (int64_t i = first; i < vectors; i += stride) {
    const int64_t o = i * 4;
    const P gv = pack_load<P>(grad + o);
    F mv = pack_load<F>(master + o), av = pack_load<F>(exp_avg + o), sv = pack_load<F>(exp_avg_sq + o);
    P pv;
#pragma unroll
    for (int k = 0; k < 4; ++k) update_one(gv.v[k], pv.v[k], mv.v[k], av.v[k], sv.v[k], s, c, scaled, scale);
    pack_store(param + o, pv);
    pack_store(master + o, mv);
    pack_store(exp_avg + o, av);
    pack_store(exp_avg_sq + o, sv);
  }
  for (int64_t i = vectors * 4 + first; i < n; i += stride)
    update_one(grad[i], param[i], master[i], exp_avg[i], exp_avg_sq[i], s, c, scaled, scale);
}

dim3 grid_for(int64_t work) {
  const int64_t blocks = (work + 255) / 256;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8))));
}

}  // namespace

void adamw_master_step_cuda(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& master,
                            const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, const at::Tensor& step,
                            const AdamWScalars& scalars, const float* grad_scale) {
  const c10::cuda::CUDAGuard guard(param.device());
  const int64_t n = param.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_REDUCED_FLOATING_TYPES(param.scalar_type(), "adamw_master", [&] {
    const bool vec = aligned_to(4 * sizeof(scalar_t), {param.data_ptr(), grad.data_ptr()}) &&
                     aligned_to(16, {master.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr()});
    const int64_t vectors = vec ? n / 4 : 0;
    adamw_master_kernel<scalar_t>
        <<<grid_for(vectors > 0 ? vectors : n), 256, 0, stream>>>(param.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                                                  master.data_ptr<float>(), exp_avg.data_ptr<float>(),
                                                                  exp_avg_sq.data_ptr<float>(), step.data_ptr<float>(),
                                                                  grad_scale, scalars, n, vectors);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ranktune
