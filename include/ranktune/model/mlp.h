// defines: Mlp, the SwiGLU feed-forward block (HF `mlp`): down_proj(silu(gate_proj(x)) * up_proj(x)).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "ranktune/model/linear.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const LlamaConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace ranktune
