// defines: Rope (rotary position embedding: inverse frequencies, with llama3 scaling when configured), RopeCache (the
// cos/sin tables for one batch of positions) and rope_apply (the fused kernel of kernels/rope.h or the composition).
// Rope is a plain object, not a module with a buffer: Module::to(kBFloat16) would round a buffer's frequencies to
// bf16, while transformers keeps them in fp32. It holds them in fp32 on the CPU and computes the tables in fp32 on the
// positions' device; only the final cos/sin take the activations' dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include "ranktune/model/llama_config.h"

namespace ranktune {

struct RopeCache {
  at::Tensor cos;  // [B or 1, T, head_dim]
  at::Tensor sin;
  // The same tables on another device (balanced sharding: one copy per stage).
  RopeCache to(at::Device device) const;
};

class Rope {
 public:
  explicit Rope(const LlamaConfig& c);
  // position_ids: [B, T] or [1, T] integers on the device that will use the tables.
  RopeCache tables(const at::Tensor& position_ids, at::ScalarType dtype) const;
  const at::Tensor& inv_freq() const { return inv_freq_; }  // [head_dim / 2] fp32, CPU

 private:
  at::Tensor inv_freq_;
};

// Rotates x [B, heads, T, head_dim] by the tables (the half-split convention of HF checkpoints): with `fused`, the
// autograd op of kernels/rope.h (one kernel each way on CUDA; the same composition on CPU), else transformers'
// composition of ATen ops (the reference).
at::Tensor rope_apply(const at::Tensor& x, const RopeCache& rope, bool fused = false);

}  // namespace ranktune
