// Building a 4-bit model one decoder layer at a time: LlamaImpl's layer hook fills layer i (random draws or the
// directory's tensors) and quantizes its linears before layer i + 1 is allocated.
#include "ranktune/model/quantize.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <memory>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "ranktune/core/error.h"
#include "ranktune/model/bnb_checkpoint.h"
#include "ranktune/model/hf_model_dir.h"

namespace ranktune {
namespace {

// The decoder linears with their names under the layer ("self_attn.q_proj"), in transformers' order.
std::vector<std::pair<std::string, LinearImpl*>> layer_linears(DecoderBlockImpl& b) {
  return {{"self_attn.q_proj", b.self_attn->q_proj.get()}, {"self_attn.k_proj", b.self_attn->k_proj.get()},
          {"self_attn.v_proj", b.self_attn->v_proj.get()}, {"self_attn.o_proj", b.self_attn->o_proj.get()},
          {"mlp.gate_proj", b.mlp->gate_proj.get()},       {"mlp.up_proj", b.mlp->up_proj.get()},
          {"mlp.down_proj", b.mlp->down_proj.get()}};
}

std::string layer_prefix(std::int64_t i) { return "model.layers." + std::to_string(i) + "."; }

// A layer's 16-bit weights and the quantizer's temporaries are freed, but glibc keeps freed chunks below its (dynamic,
// up to 32 MiB) mmap threshold in the heap, between the small NF4 tensors that stay. Measured on CPU, one training step
// of an 8-layer model (d 1024, FFN 4096, 256 MiB of bf16 linears): 2.0-2.5 GB peak RSS without this trim, 0.95 GB
// with it (fp32 without quantization: 0.98 GB).
void release_freed_host_memory(const DecoderBlockImpl& layer) {
#if defined(__GLIBC__)
  if (layer.input_layernorm->weight.device().is_cpu()) malloc_trim(0);
#endif
}

}  // namespace

Quantize quantize_parse(const std::string& name) {
  if (name == "none") return Quantize::none;
  if (name == "nf4") return Quantize::nf4;
  throw ConfigError("model.quantize \"" + name + "\" is not one of none, nf4",
                    "--model.quantize=nf4 for a 4-bit base (QLoRA), none for 16-bit");
}

void llama_layer_quantize(DecoderBlockImpl& layer, std::optional<at::ScalarType> from) {
  at::NoGradGuard no_grad;
  for (auto& [name, linear] : layer_linears(layer)) {
    if (linear->weight_nf4) continue;
    linear->set_weight_nf4(
        std::make_shared<const Nf4Weight>(nf4_quantize(from ? linear->weight.to(*from) : linear->weight)));
  }
}

void llama_quantize(LlamaImpl& model) {
  for (std::int64_t i = 0; i < model.num_layers(); ++i) llama_layer_quantize(*model.block(i));
}

bool llama_quantized(const LlamaImpl& model) {
  for (std::int64_t i = 0; i < model.num_layers(); ++i)
    for (auto& [name, linear] : layer_linears(*model.block(i)))
      if (linear->weight_nf4) return true;
  return false;
}

std::pair<std::int64_t, std::int64_t> llama_nf4_bytes(const LlamaImpl& model) {
  std::int64_t dense = 0, packed = 0;
  for (std::int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : layer_linears(*model.block(i))) {
      if (!linear->weight_nf4) continue;
      const Nf4Weight& w = *linear->weight_nf4;
      dense += w.numel() * 2;
      for (const at::Tensor& t : {w.packed, w.absmax, w.quant_map, w.nested_absmax, w.nested_quant_map})
        packed += t.numel() * static_cast<std::int64_t>(t.element_size());
    }
  }
  return {dense, packed};
}

Llama llama_random_quantized(const LlamaConfig& c, std::uint64_t seed, const at::TensorOptions& options, Quantize q) {
  if (q == Quantize::none) return llama_random(c, seed, options);
  // llama_init_random draws in named_parameters() order: the embedding, each layer, then the final norm and lm_head.
  // The hook keeps that order, so the 4-bit model quantizes exactly the weights llama_random would have made.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  bool embedded = false;
  const auto embed = [&](LlamaModelImpl& m) {
    for (auto& item : m.embed_tokens->named_parameters())
      llama_init_parameter("model.embed_tokens." + item.key(), item.value(), gen);
    embedded = true;
  };
  Llama model(c, options, [&](LlamaModelImpl& m, std::int64_t i) {
    if (!embedded) embed(m);
    DecoderBlockImpl& layer = *m.layers->ptr<DecoderBlockImpl>(i);
    for (auto& item : layer.named_parameters()) llama_init_parameter(layer_prefix(i) + item.key(), item.value(), gen);
    llama_layer_quantize(layer);
    release_freed_host_memory(layer);
  });
  if (!embedded) embed(*model->model);
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (name.starts_with("model.layers.") || name.starts_with("model.embed_tokens.")) continue;
    llama_init_parameter(name, item.value(), gen);
  }
  return model;
}

std::vector<std::pair<std::string, at::Tensor>> llama_nf4_state(const LlamaImpl& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::int64_t i = 0; i < model.num_layers(); ++i)
    for (auto& [name, linear] : layer_linears(*model.block(i)))
      if (linear->weight_nf4)
        for (auto& t : nf4_state_dict(*linear->weight_nf4, layer_prefix(i) + name + ".")) out.push_back(std::move(t));
  return out;
}

Llama llama_from_pretrained_quantized(const std::string& dir, const at::TensorOptions& options, Quantize q,
                                      std::optional<at::ScalarType> from) {
  if (q == Quantize::none) return llama_from_pretrained(dir, options);
  LlamaConfig c = hf_model_config_unchecked(dir);
  const HfModelDir files(dir);
  hf_model_dir_check(c, files);  // before anything is allocated
  at::NoGradGuard no_grad;
  Llama model(std::move(c), options, [&](LlamaModelImpl& m, std::int64_t i) {
    DecoderBlockImpl& layer = *m.layers->ptr<DecoderBlockImpl>(i);
    const std::string prefix = layer_prefix(i);
    for (auto& [name, linear] : layer_linears(layer)) {
      const std::string lp = prefix + name + ".";
      if (!files.find(lp + "weight.absmax")) continue;
      // Already 4-bit ("...-bnb-4bit"): taken as stored, never dequantized and quantized again.
      // The directory overload: transformers may cut a shard between a linear's six tensors.
      linear->set_weight_nf4(
          std::make_shared<const Nf4Weight>(nf4_weight_read(files, lp, layer.input_layernorm->weight.device(),
                                                            {linear->out_features, linear->in_features})));
    }
    for (auto& item : layer.named_parameters()) item.value().copy_(files.tensor(prefix + item.key()));
    llama_layer_quantize(layer, from);  // the 16-bit ones: quantized on the layer's device, then dropped
    release_freed_host_memory(layer);
  });
  for (auto& item : model->named_parameters()) {
    if (item.key().starts_with("model.layers.")) continue;
    item.value().copy_(files.tensor(item.key()));
  }
  return model;
}

}  // namespace ranktune
