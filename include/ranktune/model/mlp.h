// defines: Mlp, the SwiGLU feed-forward block (HF `mlp`): down_proj(silu(gate_proj(x)) * up_proj(x)), over the whole
// input or, with chunk_tokens set (train.mlp_chunk_tokens), in slices of rows (tiled_mlp.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "ranktune/model/linear.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const LlamaConfig& c, const at::TensorOptions& options);
  // tiled_mlp(x, chunk_tokens) when chunk_tokens > 0 and x has more rows than that; else forward_untiled(x).
  at::Tensor forward(const at::Tensor& x);
  at::Tensor forward_untiled(const at::Tensor& x);

  std::int64_t chunk_tokens = 0;  // rows (tokens) per slice; 0 = never tiled

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace ranktune
