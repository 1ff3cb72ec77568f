// defines: LoRA for a Llama: lora_apply (adapters on the [lora] target modules, PEFT's initialisation, base frozen),
// lora_merge (fold W += scale * B A into the base and drop the adapters), lora_use_fp8, lora_load_peft (a PEFT adapter
// directory), trainable_parameters (exactly what the optimizer and the gradient all-reduce get) and lora_peft_name.
// Adapter names are PEFT's minus its prefix: ours `model.layers.0.self_attn.q_proj.lora_A.weight` is PEFT's
// `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` in adapter_model.safetensors.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/model/llama.h"

namespace ranktune {

// "q,k,v,o,gate,up,down" (short or HF names, any order) -> HF module names in that canonical order. ConfigError
// naming an unknown entry.
std::vector<std::string> lora_target_modules(const std::string& list);

// Attaches adapters of rank cfg.r to every target module: lora_A [r, in] kaiming-uniform (PEFT's bound 1/sqrt(in)),
// lora_B [out, r] zeros, so the model starts equal to the base; scale alpha / r; dropout on the adapter input while
// training. Adapters are `adapter_dtype` (fp32: trainable master weights even over a bf16 base) on the base's device.
// Every other parameter stops requiring grad.
void lora_apply(LlamaImpl& model, const LoraConfig& cfg, std::uint64_t seed, at::ScalarType adapter_dtype = at::kFloat);

// W += scale * B A (computed in fp32, rounded once to W's dtype), then removes the adapters.
void lora_merge(LlamaImpl& model);

bool lora_attached(const LlamaImpl& model);

// Routes every adapted linear through the unfused reference path (PEFT's order, adapter in its own dtype) instead of
// the fused op of lora_linear.h, or back: the comparison the tests make, and an eager fallback.
void lora_use_reference(LlamaImpl& model, bool reference);

// train.fp8_matmuls: every adapted linear's frozen base matmuls in FP8 e4m3 (lora_linear.h), or back to the compute
// dtype. ConfigError naming the first linear that cannot: a 4-bit base, a device below compute capability 8.9, or on
// a GPU a size that is not a multiple of 16. Layers move with their flag (balanced stages check on their device when
// the flag is set after placement).
void lora_use_fp8(LlamaImpl& model, bool on);

// Applies the adapter of a PEFT directory (adapter_config.json + adapter_model.safetensors) to the model.
void lora_load_peft(LlamaImpl& model, const std::string& adapter_dir);

// Parameters with requires_grad, in registration order: all of them for a full fine-tune, only adapters under LoRA.
std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(const torch::nn::Module& model);

// PEFT's name of one of our parameters in adapter_model.safetensors.
std::string lora_peft_name(const std::string& name);

}  // namespace ranktune
