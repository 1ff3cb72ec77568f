// defines: DecoderBlock, one pre-norm transformer layer (HF `model.layers.N`):
// h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
// The unit that balanced sharding places on a device and that activation checkpointing recomputes. Also
// kDecoderLinears, the one list of its seven linears that LoRA, quantization and the model-directory checks walk.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string_view>

#include "ranktune/model/attention.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/mlp.h"
#include "ranktune/model/rms_norm.h"

namespace ranktune {

// The decoder linears under a layer as transformers names them, in its registration order; the part after the dot is
// the module name of LoRA's and PEFT's target_modules ("q_proj").
inline constexpr std::array<std::string_view, 7> kDecoderLinears = {"self_attn.q_proj", "self_attn.k_proj",
                                                                    "self_attn.v_proj", "self_attn.o_proj",
                                                                    "mlp.gate_proj",    "mlp.up_proj",
                                                                    "mlp.down_proj"};

// "self_attn.q_proj" -> "q_proj"; a module name stays as it is.
constexpr std::string_view decoder_linear_module(std::string_view name) { return name.substr(name.find('.') + 1); }

class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const LlamaConfig& c, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask = {});  // mask: Attention's
  // The linear an entry of kDecoderLinears, or its module name, names; std::invalid_argument for any other name.
  Linear& linear(std::string_view name);

  // Registered in transformers' order, so named_parameters() lists them as HF does.
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderBlock);

}  // namespace ranktune
