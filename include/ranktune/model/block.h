// defines: DecoderBlock, one pre-norm transformer layer (HF `model.layers.N`):
// h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
// The unit that balanced sharding places on a device and that activation checkpointing recomputes.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "ranktune/model/attention.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/mlp.h"
#include "ranktune/model/rms_norm.h"

namespace ranktune {

class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const LlamaConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask = {});  // mask: Attention's

  // Registered in transformers' order, so named_parameters() lists them as HF does.
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderBlock);

}  // namespace ranktune
