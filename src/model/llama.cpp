#include "ranktune/model/llama.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/error.h"
#include "ranktune/model/activation_checkpoint.h"
#include "ranktune/model/attention.h"
#include "ranktune/model/lora.h"

namespace ranktune {
LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c, const at::TensorOptions& options,
                               const LlamaLayerHook& each_layer) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    layers->push_back(DecoderBlock(c, options));
    if (each_layer) each_layer(*this, i);
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

LlamaImpl::LlamaImpl(LlamaConfig c, const at::TensorOptions& options, const LlamaLayerHook& each_layer)
    : config_((llama_config_validate(c), std::move(c))), rope_(config_) {
  model = register_module("model", LlamaModel(config_, options, each_layer));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(config_.hidden_size, config_.vocab_size, /*bias=*/false, options));
  }
}

at::Tensor LlamaImpl::embed(const at::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong, "tokens must be [B, T] int64, got ",
              tokens.sizes(), " ", tokens.scalar_type());
  const at::Device d = model->embed_tokens->weight.device();
  return model->embed_tokens->forward(tokens.device() == d ? tokens : tokens.to(d));
}

RopeCache LlamaImpl::rope(std::int64_t seq_len, at::Device device, at::ScalarType dtype) const {
  return rope_.tables(at::arange(seq_len, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0), dtype);
}

RopeCache LlamaImpl::rope(const at::Tensor& position_ids, at::ScalarType dtype) const {
  return rope_.tables(position_ids, dtype);
}

DecoderBlock LlamaImpl::block(std::int64_t i) const { return DecoderBlock(model->layers->ptr<DecoderBlockImpl>(i)); }

at::Tensor LlamaImpl::run_block(std::int64_t i, const at::Tensor& h, const RopeCache& rope, const at::Tensor& mask) {
  DecoderBlockImpl& b = *model->layers->ptr<DecoderBlockImpl>(i);
  return activation_checkpointed(i)
             ? activation_checkpoint_forward(b, h, rope, mask, activation_offload_, offload_budget_)
             : b.forward(h, rope, mask);
}

std::int64_t LlamaImpl::activation_checkpointed_layers() const {
  return activation_checkpointing_ ? activation_checkpointed_count(num_layers(), activation_checkpointing_layers_) : 0;
}

bool LlamaImpl::activation_checkpointed(std::int64_t i) const {
  return activation_checkpointing_ && activation_checkpointed_layer(i, num_layers(), activation_checkpointing_layers_);
}

at::Device LlamaImpl::block_device(std::int64_t i) const { return block(i)->input_layernorm->weight.device(); }
at::Device LlamaImpl::head_device() const { return model->norm->weight.device(); }

at::Tensor LlamaImpl::final_norm(const at::Tensor& x) {
  return model->norm->forward(x.device() == head_device() ? x : x.to(head_device()));
}

at::Tensor LlamaImpl::head_weight() {
  if (lm_head) return lm_head->weight;
  const at::Tensor& w = model->embed_tokens->weight;
  return w.device() == head_device() ? w : w.to(head_device());  // the tied hop
}

bool LlamaImpl::head_is_matmul() const { return !lm_head || (!lm_head->lora_A && !lm_head->bias.defined()); }

at::Tensor LlamaImpl::head(const at::Tensor& x) {
  const at::Tensor normed = final_norm(x);
  if (lm_head) return lm_head->forward(normed);
  return at::linear(normed, head_weight());
}

at::Tensor LlamaImpl::forward(const at::Tensor& tokens, const at::Tensor& position_ids, const at::Tensor& documents) {
  return head(hidden_states(tokens, position_ids, documents));
}

at::Tensor LlamaImpl::hidden_states(const at::Tensor& tokens, const at::Tensor& position_ids,
                                    const at::Tensor& documents) {
  at::Tensor h = embed(tokens);
  if (position_ids.defined()) {
    TORCH_CHECK(position_ids.dim() == 2 && (position_ids.size(0) == 1 || position_ids.size(0) == tokens.size(0)) &&
                    position_ids.size(1) == tokens.size(1),
                "position_ids must be [B, T] or [1, T] for tokens ", tokens.sizes(), ", got ", position_ids.sizes());
  }
  if (documents.defined()) {
    TORCH_CHECK(documents.dim() == 2 && documents.size(0) == tokens.size(0) && documents.size(1) == tokens.size(1),
                "documents must be [B, T] for tokens ", tokens.sizes(), ", got ", documents.sizes());
  }
  RopeCache r = position_ids.defined() ? rope(position_ids.to(h.device()), h.scalar_type())
                                       : rope(tokens.size(1), h.device(), h.scalar_type());
  at::Tensor mask = attention_mask(documents, h.device(), h.scalar_type(), config_.head_dim, flash_varlen_);
  for (std::int64_t i = 0; i < num_layers(); ++i) {
    const at::Device d = block_device(i);
    if (h.device() != d) {  // the next stage of a sharded model
      h = h.to(d);
      r = r.to(d);
      if (mask.defined()) mask = mask.to(d);
    }
    h = run_block(i, h, r, mask);
  }
  return h;
}

void LlamaImpl::set_fused_kernels(bool on) {
  fused_kernels_ = on;
  for (std::int64_t i = 0; i < num_layers(); ++i) {
    DecoderBlock b = block(i);
    b->input_layernorm->fused = on;
    b->post_attention_layernorm->fused = on;
    b->self_attn->fused_rope = on;
  }
  model->norm->fused = on;
  lora_use_reference(*this, !on);
}

void LlamaImpl::set_mlp_chunk_tokens(std::int64_t tokens) {
  for (std::int64_t i = 0; i < num_layers(); ++i) block(i)->mlp->chunk_tokens = tokens;
}

void llama_init_random(LlamaImpl& model, std::uint64_t seed, double std) {
  at::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : model.named_parameters()) llama_init_parameter(item.key(), item.value(), gen, std);
}

void llama_init_parameter(const std::string& name, at::Tensor& p, at::Generator& gen, double std) {
  at::NoGradGuard no_grad;
  if (name.find(".lora_") != std::string::npos) return;
  if (name.ends_with("norm.weight")) {
    p.fill_(1.0);
  } else if (name.ends_with(".bias")) {
    p.zero_();
  } else {
    p.copy_(at::empty(p.sizes(), at::kFloat).normal_(0.0, std, gen));
  }
}

at::ScalarType llama_dtype(const at::Device& device, const std::string& precision) {
  if (precision == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp32") return at::kFloat;
  throw ConfigError("train.precision \"" + precision + "\" is not one of auto, bf16, fp32",
                    "set train.precision = auto (bf16 on GPU, fp32 on CPU)");
}

Llama llama_random(const LlamaConfig& c, std::uint64_t seed, const at::TensorOptions& options) {
  Llama model(c, options);
  llama_init_random(*model, seed);
  return model;
}

}  // namespace ranktune
