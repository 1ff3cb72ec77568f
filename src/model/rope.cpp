#include "ranktune/model/rope.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <cmath>

#include "ranktune/kernels/rope.h"

namespace ranktune {

// The arithmetic follows transformers' expression order (reciprocals, then products) so that fp32 results agree
// to the last bits, not merely to a tolerance.
Rope::Rope(const LlamaConfig& c) {
  const std::int64_t dim = c.head_dim;
  const at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv = at::pow(c.rope_theta, exponents).reciprocal();
  if (c.rope_scaling.type == "llama3") {
    const RopeScaling& s = c.rope_scaling;
    const double old_context = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / s.low_freq_factor;
    const double high_freq_wavelen = old_context / s.high_freq_factor;
    const at::Tensor wavelen = inv.reciprocal() * (2 * M_PI);
    const at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv / s.factor, inv);
    const at::Tensor smooth = (wavelen.reciprocal() * old_context - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    inv = at::where(medium, smoothed, scaled);
  }
  inv_freq_ = inv.contiguous();
}

RopeCache Rope::tables(const at::Tensor& position_ids, at::ScalarType dtype) const {
  TORCH_CHECK(position_ids.dim() == 2, "position_ids must be [B, T] or [1, T], got ", position_ids.sizes());
  const at::Tensor freqs = position_ids.unsqueeze(-1).to(at::kFloat) * inv_freq_.to(position_ids.device());
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

RopeCache RopeCache::to(at::Device device) const { return {cos.to(device), sin.to(device)}; }

at::Tensor rope_apply(const at::Tensor& x, const RopeCache& rope, bool fused) {
  RECORD_FUNCTION("ranktune::rope", c10::ArrayRef<const c10::IValue>{});  // a named row in profile tables
  if (fused) return rope_rotate(x, rope.cos, rope.sin);
  const std::int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * rope.cos.unsqueeze(1) + rotated * rope.sin.unsqueeze(1);
}

}  // namespace ranktune
