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
  std::vector<std::pair<std::string, LinearImpl*>> out;
  for (std::string_view name : kDecoderLinears) out.emplace_back(std::string(name), b.linear(name).get());
  return out;
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

// Whether every value of `from` is exactly a value of `to`, so that quantizing a `from` tensor gives the codes of its
// `to` copy.
bool widens_exactly(at::ScalarType from, at::ScalarType to) {
  return from == to || (to == at::kFloat && (from == at::kBFloat16 || from == at::kHalf));
}

// A 16-bit linear quantized straight from the file's tensor: the same bytes as filling the parameter and quantizing it
// (llama_layer_quantize), without writing the parameter. On the CPU that parameter is fp32 over a bf16 file, and
// filling it was 4 bytes written and page-faulted per weight for nothing but the quantizer to read them back.
Nf4Weight quantize_from_file(const at::Tensor& file_tensor, const at::Tensor& parameter,
                             std::optional<at::ScalarType> from) {
  const at::ScalarType held = parameter.scalar_type();
  at::Tensor w = file_tensor;
  if (!widens_exactly(w.scalar_type(), held)) w = w.to(held);  // the rounding the parameter would have made
  if (from) w = w.to(*from);
  Nf4Weight q = nf4_quantize(w.to(parameter.device()));
  q.dtype = from.value_or(held);
  return q;
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
    for (auto& [name, linear] : layer_linears(layer)) {
      if (linear->weight_nf4) continue;
      // The 16-bit ones: quantized on the layer's device; the parameter is dropped unwritten.
      linear->set_weight_nf4(std::make_shared<const Nf4Weight>(
          quantize_from_file(files.tensor(prefix + name + ".weight"), linear->weight, from)));
    }
    for (auto& item : layer.named_parameters()) item.value().copy_(files.tensor(prefix + item.key()));
    release_freed_host_memory(layer);
  });
  for (auto& item : model->named_parameters()) {
    if (item.key().starts_with("model.layers.")) continue;
    item.value().copy_(files.tensor(item.key()));
  }
  return model;
}

}  // namespace ranktune
