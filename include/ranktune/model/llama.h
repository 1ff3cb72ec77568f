// defines: LlamaModel (HF `model`: embed_tokens, layers, norm) and Llama (HF *ForCausalLM: `model` + `lm_head`),
// with the stages a layer-sharding executor runs one by one, random init from a seed, and the HF parameter names.
// Names are transformers' own (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`): checkpoints load by name
// with no mapping table. With tied embeddings there is no `lm_head` module; head() multiplies by embed_tokens.weight.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "ranktune/model/activation_checkpoint.h"
#include "ranktune/model/block.h"
#include "ranktune/model/embedding.h"
#include "ranktune/model/linear.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/rms_norm.h"
#include "ranktune/model/rope.h"

namespace ranktune {

class LlamaModelImpl;
// Runs as decoder layer i has been built, before layer i + 1 is allocated (embed_tokens exists, norm does not yet):
// where a 4-bit model fills and quantizes each layer, so that the whole model never exists in 16 bits
// (model/quantize.h).
using LlamaLayerHook = std::function<void(LlamaModelImpl& model, std::int64_t layer)>;

class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const LlamaConfig& c, const at::TensorOptions& options, const LlamaLayerHook& each_layer = {});

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};  // of DecoderBlock
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

// Weights are allocated with `options` (device, dtype: fp32 on CPU, bf16 on GPU) and left uninitialised: fill them
// with llama_init_random or llama_load_weights (hf_model_dir.h), or use llama_random / llama_from_pretrained.
//
// forward(tokens) is, stage by stage:
//   h = embed(tokens); r = rope(T, h.device(), h.scalar_type()); m = attention_mask(documents, ...);
//   for i in [0, num_layers()): h = block(i)->forward(h, r, m);
//   logits = head(h);
// The weights may be spread over several devices (balanced sharding): forward() then follows them, moving the hidden
// state to each layer's device (one stage at a time, as accelerate's hooks do); the pipelined executor
// (train/pipeline.h) runs the same stages with micro-batches in flight. With tied embeddings on another device than
// the final norm, head() copies embed_tokens.weight over: an explicit hop, differentiable, once per call.
class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(LlamaConfig c, const at::TensorOptions& options = {}, const LlamaLayerHook& each_layer = {});

  // tokens [B, T] int64, position_ids [B, T] or [1, T] (default 0..T-1) -> logits [B, T, vocab] in the weights' dtype.
  // position_ids only move the rotary phases. Without documents attention is causal over the T tokens; documents
  // [B, T] (the document index of each token of a packed row) restrict it to the earlier tokens of the same document.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& position_ids = {}, const at::Tensor& documents = {});
  // forward() without head(): the last decoder layer's output [B, T, d], for a loss that fuses the head
  // (linear_cross_entropy.h) and never materialises the logits.
  at::Tensor hidden_states(const at::Tensor& tokens, const at::Tensor& position_ids = {},
                           const at::Tensor& documents = {});

  at::Tensor embed(const at::Tensor& tokens);
  RopeCache rope(std::int64_t seq_len, at::Device device, at::ScalarType dtype) const;
  RopeCache rope(const at::Tensor& position_ids, at::ScalarType dtype) const;
  std::int64_t num_layers() const { return static_cast<std::int64_t>(model->layers->size()); }
  DecoderBlock block(std::int64_t i) const;
  // Layer i on h (checkpointed when activation checkpointing is on and gradients are being recorded); mask as
  // attention_mask (attention.h) makes it once per batch for h's device, or undefined for plain causal attention.
  at::Tensor run_block(std::int64_t i, const at::Tensor& h, const RopeCache& rope, const at::Tensor& mask = {});
  at::Tensor head(const at::Tensor& h);        // final norm + lm_head -> logits
  at::Tensor final_norm(const at::Tensor& h);  // h moved to head_device(), then the final norm
  at::Tensor head_weight();  // [vocab, d] on head_device(): lm_head's, or the tied embedding's (hopped, differentiable)
  bool head_is_matmul() const;  // head() is final_norm then a plain matmul by head_weight() (no LoRA, no bias)
  at::Device block_device(std::int64_t i) const;
  at::Device head_device() const;

  // Recompute layers' activations in backward instead of keeping them (train.activation_checkpointing): `layers` of
  // them spread evenly (train.activation_checkpointing_layers, core/activation_checkpointing_layers.h); 0 = every one.
  void set_activation_checkpointing(bool on, std::int64_t layers = 0) {
    activation_checkpointing_ = on;
    activation_checkpointing_layers_ = layers;
  }
  bool activation_checkpointing() const { return activation_checkpointing_; }
  // How many layers recompute (0 without activation checkpointing), and whether layer i does.
  std::int64_t activation_checkpointed_layers() const;
  bool activation_checkpointed(std::int64_t i) const;
  // Keep the layer inputs that activation checkpointing saves in pinned host memory until their backward
  // (train.activation_offload), at most max_host_bytes of them at once (the ones past it stay on the device);
  // nothing changes without activation checkpointing.
  void set_activation_offload(bool on, std::int64_t max_host_bytes = std::numeric_limits<std::int64_t>::max()) {
    activation_offload_ = on;
    offload_budget_ = std::make_shared<OffloadBudget>(max_host_bytes);
  }
  const OffloadBudget& offload_budget() const { return *offload_budget_; }
  // Compute the training loss with the fused chunked linear cross entropy (train.fused_loss); off = head() + loss.
  void set_fused_loss(bool on) { fused_loss_ = on; }
  // train.flash_varlen: packed documents through the flash kernel's variable-length form on GPU (attention_mask).
  void set_flash_varlen(bool on) { flash_varlen_ = on; }
  bool flash_varlen() const { return flash_varlen_; }
  // train.kernels: true = the fused ops (RMSNorm's and RoPE's fused kernels on GPU, the LoRA fast path), false = the
  // unfused reference compositions (transformers' RMSNorm and RoPE order, PEFT's adapter order) in every layer, and the
  // fused loss's softmax by ATen ops. Call after lora_apply.
  void set_fused_kernels(bool on);
  bool fused_kernels() const { return fused_kernels_; }
  // train.mlp_chunk_tokens: every layer's MLP runs in slices of this many tokens when a micro-batch has more
  // (tiled_mlp.h); 0 = whole.
  void set_mlp_chunk_tokens(std::int64_t tokens);
  bool fused_loss() const { return fused_loss_; }

  const LlamaConfig& config() const { return config_; }

  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  LlamaConfig config_;
  Rope rope_;
  bool activation_checkpointing_ = false;
  std::int64_t activation_checkpointing_layers_ = 0;
  bool activation_offload_ = false;
  std::shared_ptr<OffloadBudget> offload_budget_ = std::make_shared<OffloadBudget>();
  bool fused_loss_ = false;
  bool fused_kernels_ = true;
  bool flash_varlen_ = true;
};
TORCH_MODULE(Llama);

// transformers' initialisation: normal(0, std) for linear and embedding weights, ones for norms, zeros for biases.
// Deterministic for a seed whatever the device (drawn on the CPU in named_parameters() order); LoRA adapters untouched.
void llama_init_random(LlamaImpl& model, std::uint64_t seed, double std = 0.02);
// One parameter of that initialisation, by its name, drawing from `gen`: what a model built layer by layer calls in
// named_parameters() order to draw the same numbers.
void llama_init_parameter(const std::string& name, at::Tensor& p, at::Generator& gen, double std = 0.02);

// The weights' dtype for [train] precision: "auto" = bf16 on CUDA, fp32 on CPU; "bf16"; "fp32". ConfigError otherwise.
at::ScalarType llama_dtype(const at::Device& device, const std::string& precision);

// A model with random weights: tests, benchmarks, from-scratch runs.
Llama llama_random(const LlamaConfig& c, std::uint64_t seed, const at::TensorOptions& options = {});

}  // namespace ranktune
