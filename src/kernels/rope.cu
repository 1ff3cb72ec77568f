// Fused rotary embedding: one thread per (row, i) pair of the two halves of head_dim; memory bound; math in fp32
// whatever the storage type, rounded once. Strided [B, heads, T, head_dim] views are read and written in place of a
// copy (q and k come out of their projections as transposed views).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <initializer_list>

#include "ranktune/core/cuda_check.h"
#include "rope_cuda.h"
#include "vec16.cuh"

namespace ranktune {
namespace {

struct Strides4 {
  int64_t b, h, t;  // the last dimension has stride 1
};

// W consecutive elements of each half a thread, loaded and stored 16 bytes at a time when W > 1.
template <class T, int W>
__global__ void rope_kernel(const T* __restrict__ x, Strides4 xs, T* __restrict__ y, Strides4 ys,
                            const T* __restrict__ cos, const T* __restrict__ sin, int64_t table_batch_stride,
                            int64_t heads, int64_t seq, int64_t half, int64_t n, bool transpose) {
  using P = Pack<T, W>;
  const int64_t packs = half / W;  // per half-row
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = (idx % packs) * W;
    const int64_t row = idx / packs;
    const int64_t t = row % seq;
    const int64_t h = (row / seq) % heads;
    const int64_t b = row / (seq * heads);
    const int64_t xo = b * xs.b + h * xs.h + t * xs.t + i;
    const int64_t yo = b * ys.b + h * ys.h + t * ys.t + i;
    const int64_t to = b * table_batch_stride + t * 2 * half + i;
    const P x1 = pack_load<P>(x + xo), x2 = pack_load<P>(x + xo + half);
    const P c1 = pack_load<P>(cos + to), c2 = pack_load<P>(cos + to + half);
    const P s1 = pack_load<P>(sin + to), s2 = pack_load<P>(sin + to + half);
    P y1, y2;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float a = static_cast<float>(x1.v[k]), b2 = static_cast<float>(x2.v[k]);
      const float ca = static_cast<float>(c1.v[k]), cb = static_cast<float>(c2.v[k]);
      const float sa = static_cast<float>(s1.v[k]), sb = static_cast<float>(s2.v[k]);
      // Forward y = x * cos + [-x2, x1] * sin; the transpose (backward) g * cos + [ (g sin)_2, -(g sin)_1 ].
      if (!transpose) {
        y1.v[k] = static_cast<T>(a * ca - b2 * sa);
        y2.v[k] = static_cast<T>(b2 * cb + a * sb);
      } else {
        y1.v[k] = static_cast<T>(a * ca + b2 * sb);
        y2.v[k] = static_cast<T>(b2 * cb - a * sa);
      }
    }
    pack_store(y + yo, y1);
    pack_store(y + yo + half, y2);
  }
}

// The widest pack (16 bytes, else 1 element) that every row start, half offset and base pointer allows.
template <class T>
bool packs_fit(int w, int64_t half, std::initializer_list<int64_t> strides, std::initializer_list<const void*> bases) {
  if (half % w != 0) return false;
  for (int64_t s : strides)
    if (s % w != 0) return false;
  return aligned_to(sizeof(T) * w, bases);
}

}  // namespace

at::Tensor rope_rotate_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool transpose) {
  const c10::cuda::CUDAGuard guard(x.device());
  // empty_like keeps a dense view's strides, so a transposed q stays a view of [B, T, heads, head_dim] storage.
  at::Tensor y = at::empty_like(x);
  if (y.stride(-1) != 1) y = at::empty(x.sizes(), x.options());
  const int64_t half = x.size(3) / 2;
  const int64_t n = x.size(0) * x.size(1) * x.size(2) * half;
  if (n == 0) return y;
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2)}, ys{y.stride(0), y.stride(1), y.stride(2)};
  const int64_t table_batch_stride = cos.size(0) == 1 ? 0 : cos.stride(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rope_rotate", [&] {
    constexpr int wide = 16 / sizeof(scalar_t);
    const bool packed = packs_fit<scalar_t>(wide, half, {xs.b, xs.h, xs.t, ys.b, ys.h, ys.t, table_batch_stride},
                                            {x.data_ptr(), y.data_ptr(), cos.data_ptr(), sin.data_ptr()});
    const int64_t work = packed ? n / wide : n;
    const auto blocks = static_cast<unsigned>(std::min<int64_t>((work + 255) / 256, 65535 * 8));
    const auto* xp = x.data_ptr<scalar_t>();
    auto* yp = y.data_ptr<scalar_t>();
    const auto *cp = cos.data_ptr<scalar_t>(), *sp = sin.data_ptr<scalar_t>();
    if (packed)
      rope_kernel<scalar_t, wide><<<blocks, 256, 0, stream>>>(xp, xs, yp, ys, cp, sp, table_batch_stride, x.size(1),
                                                              x.size(2), half, work, transpose);
    else
      rope_kernel<scalar_t, 1><<<blocks, 256, 0, stream>>>(xp, xs, yp, ys, cp, sp, table_batch_stride, x.size(1),
                                                           x.size(2), half, work, transpose);
  });
  RANKTUNE_CUDA_CHECK(cudaGetLastError());
  return y;
}

}  // namespace ranktune
