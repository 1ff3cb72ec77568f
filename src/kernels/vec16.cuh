// defines: Pack<T, W>, W elements of T moved by one aligned load or store (Vec16<T>: 16 bytes, the widest an H100
// thread issues; W = 1: one element), pack_load/pack_store, and aligned_to, the host check that pointers allow it.
// Internal to the elementwise kernels (rope.cu, swiglu.cu, adamw.cu): memory bound, they read and write 16 bytes a thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace ranktune {

template <class T, int W>
struct alignas(sizeof(T) * W) Pack {
  static constexpr int n = W;
  T v[W];
};

template <class T>
using Vec16 = Pack<T, 16 / sizeof(T)>;

// `p` must be aligned to sizeof(P) (aligned_to on the host).
template <class P, class T>
__device__ __forceinline__ P pack_load(const T* p) {
  return *reinterpret_cast<const P*>(p);
}

template <class P, class T>
__device__ __forceinline__ void pack_store(T* p, const P& value) {
  *reinterpret_cast<P*>(p) = value;
}

inline bool aligned_to(std::size_t bytes, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0) return false;
  return true;
}

}  // namespace ranktune
