#include "ranktune/model/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "ranktune/core/error.h"
#include "ranktune/core/text.h"
#include "ranktune/kernels/fp8.h"
#include "ranktune/kernels/nf4.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

const char* const kPeftPrefix = "base_model.model.";

template <class F>
void for_each_target(LlamaImpl& model, F&& f) {
  for (std::int64_t i = 0; i < model.num_layers(); ++i) {
    DecoderBlock block = model.block(i);
    for (std::string_view name : kDecoderLinears) f(block->linear(name));
  }
}

}  // namespace

std::vector<std::string> lora_target_modules(const std::string& list) {
  std::set<std::string> wanted;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = trim(list.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) continue;
    const std::string full = item.size() > 5 && item.ends_with("_proj") ? item : item + "_proj";
    if (std::none_of(kDecoderLinears.begin(), kDecoderLinears.end(),
                     [&](std::string_view n) { return decoder_linear_module(n) == full; })) {
      throw ConfigError("lora.target_modules: unknown module \"" + item + "\"",
                        "choose from q, k, v, o, gate, up, down (or their HF names q_proj, ...)");
    }
    wanted.insert(full);
  }
  if (wanted.empty())
    throw ConfigError("lora.target_modules is empty", "e.g. lora.target_modules = q,k,v,o,gate,up,down");
  std::vector<std::string> out;
  for (std::string_view name : kDecoderLinears) {
    const std::string module(decoder_linear_module(name));
    if (wanted.count(module)) out.push_back(module);
  }
  return out;
}

bool lora_attached(const LlamaImpl& model) {
  for (const auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) return true;
  }
  return false;
}

void lora_use_reference(LlamaImpl& model, bool reference) {
  for_each_target(model, [&](Linear& layer) { layer->lora_reference = reference; });
}

void lora_use_fp8(LlamaImpl& model, bool on) {
  for (std::int64_t i = 0; i < model.num_layers(); ++i) {
    DecoderBlock block = model.block(i);
    for (std::string_view name : kDecoderLinears) {
      Linear& layer = block->linear(name);
      if (!layer->lora_A) continue;
      layer->lora_fp8 = false;
      if (!on) continue;
      const std::string where = "model.layers." + std::to_string(i) + "." + std::string(decoder_linear_module(name));
      if (layer->weight_nf4)
        throw ConfigError("train.fp8_matmuls: " + where + " has a 4-bit base (model.quantize=nf4)",
                          "use train.fp8_matmuls with a 16-bit base, or leave it off for QLoRA");
      const at::Device device = layer->weight.device();
      if (!fp8_matmuls_supported(device))
        throw ConfigError("train.fp8_matmuls: " + device.str() +
                              " runs no FP8 matmuls (compute capability 8.9 or "
                              "more: Ada, Hopper, Blackwell)",
                          "leave train.fp8_matmuls off on this GPU");
      if (device.is_cuda() && (layer->in_features % 16 != 0 || layer->out_features % 16 != 0))
        throw ConfigError("train.fp8_matmuls: " + where + " is " + std::to_string(layer->out_features) + " x " +
                              std::to_string(layer->in_features) + "; FP8 matmuls on a GPU want multiples of 16",
                          "leave train.fp8_matmuls off for this model");
      layer->lora_fp8 = true;
    }
  }
}

void lora_apply(LlamaImpl& model, const LoraConfig& cfg, std::uint64_t seed, at::ScalarType adapter_dtype) {
  if (cfg.r <= 0) throw ConfigError("lora.r must be positive to attach adapters, got " + std::to_string(cfg.r));
  if (!(cfg.alpha > 0)) throw ConfigError("lora.alpha must be positive, got " + std::to_string(cfg.alpha));
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) {
    throw ConfigError("lora.dropout must be in [0, 1), got " + std::to_string(cfg.dropout));
  }
  if (lora_attached(model)) throw ConfigError("the model already has LoRA adapters", "merge them first (lora_merge)");
  const std::vector<std::string> targets = lora_target_modules(cfg.target_modules);

  at::NoGradGuard no_grad;
  for (auto& p : model.parameters()) p.requires_grad_(false);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (std::int64_t i = 0; i < model.num_layers(); ++i) {
    DecoderBlock block = model.block(i);
    for (const std::string& name : targets) {
      LinearImpl& base = *block->linear(name);
      // A 4-bit base has no 16-bit weight: its adapters go to the device of its packed codes.
      const auto options =
          (base.weight_nf4 ? at::TensorOptions(base.weight_nf4->packed.device()) : base.weight.options())
              .dtype(adapter_dtype);
      base.lora_A = base.register_module("lora_A", Linear(base.in_features, cfg.r, /*bias=*/false, options));
      base.lora_B = base.register_module("lora_B", Linear(cfg.r, base.out_features, /*bias=*/false, options));
      // PEFT: kaiming_uniform_(a=sqrt(5)) on A, whose bound gain * sqrt(3 / fan_in) is 1 / sqrt(in_features).
      const double bound = 1.0 / std::sqrt(static_cast<double>(base.in_features));
      base.lora_A->weight.copy_(at::empty({cfg.r, base.in_features}, at::kFloat).uniform_(-bound, bound, gen));
      base.lora_B->weight.zero_();
      base.lora_scale = cfg.alpha / cfg.r;
      base.lora_dropout = cfg.dropout;
    }
  }
}

void lora_merge(LlamaImpl& model) {
  at::NoGradGuard no_grad;
  // A 4-bit base comes back as a 16-bit weight in the model's dtype (its norms'), the adapter folded into the
  // dequantized fp32 weight and rounded once: what Unsloth's "merged_16bit" writes. Every decoder linear is
  // dequantized, adapted or not, so that no NF4 weight is left behind.
  const at::ScalarType dtype = model.model->norm->weight.scalar_type();
  for_each_target(model, [dtype](Linear& layer) {
    if (layer->weight_nf4) {
      const Nf4Weight& w = *layer->weight_nf4;
      // Dequantized to the state's dtype first, as the forward (nf4_linear.h) and Unsloth's merge see the base.
      at::Tensor dense = nf4_dequantize(w).to(layer->lora_A ? at::kFloat : dtype);
      if (layer->lora_A) {
        dense +=
            at::matmul(layer->lora_B->weight.to(at::kFloat), layer->lora_A->weight.to(at::kFloat)).to(dense.device()) *
            layer->lora_scale;
        dense = dense.to(dtype);
      }
      layer->set_weight(dense);
    } else if (layer->lora_A) {
      const at::Tensor delta = at::matmul(layer->lora_B->weight.to(at::kFloat), layer->lora_A->weight.to(at::kFloat)) *
                               layer->lora_scale;
      layer->weight.copy_(layer->weight.to(at::kFloat) + delta.to(layer->weight.device()));
    }
    if (!layer->lora_A) return;
    layer->unregister_module("lora_A");
    layer->unregister_module("lora_B");
    layer->lora_A = nullptr;
    layer->lora_B = nullptr;
    layer->lora_scale = 0;
    layer->lora_dropout = 0;
  });
}

void lora_load_peft(LlamaImpl& model, const std::string& adapter_dir) {
  const fs::path config_path = fs::path(adapter_dir) / "adapter_config.json";
  std::ifstream in(config_path);
  if (!in) {
    throw ConfigError("cannot read " + config_path.string(),
                      "a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors");
  }
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(config_path.string() + " is not valid JSON (" + e.what() + ")");
  }
  const std::string origin = config_path.string();
  const auto refuse = [&](const std::string& what) {
    throw ConfigError(origin + ": " + what, "ranktune reads plain LoRA adapters (no DoRA, rsLoRA, per-module ranks)");
  };
  LoraConfig cfg;
  try {
    if (j.value("peft_type", "") != "LORA") refuse("peft_type is not LORA");
    if (j.value("use_dora", false)) refuse("use_dora is set");
    if (j.value("use_rslora", false)) refuse("use_rslora is set");
    if (j.value("fan_in_fan_out", false)) refuse("fan_in_fan_out is set");
    if (j.value("bias", "none") != "none") refuse("bias is \"" + j.value("bias", "") + "\", not \"none\"");
    for (const char* key : {"rank_pattern", "alpha_pattern"}) {
      if (j.contains(key) && !j.at(key).is_null() && !j.at(key).empty()) refuse(std::string(key) + " is not empty");
    }
    for (const char* key : {"layers_to_transform", "modules_to_save", "layer_replication", "target_parameters"}) {
      if (j.contains(key) && !j.at(key).is_null() && !j.at(key).empty()) refuse(std::string(key) + " is set");
    }
    cfg.r = j.value("r", 0);
    cfg.alpha = j.value("lora_alpha", 0.0);
    cfg.dropout = j.value("lora_dropout", 0.0);
    const nlohmann::json& targets = j.contains("target_modules") ? j.at("target_modules") : nlohmann::json();
    if (targets.is_string() && targets.get<std::string>() == "all-linear") {
      cfg.target_modules = "q,k,v,o,gate,up,down";
    } else if (targets.is_array()) {
      cfg.target_modules.clear();
      for (const auto& t : targets)
        cfg.target_modules += (cfg.target_modules.empty() ? "" : ",") + t.get<std::string>();
    } else {
      refuse("target_modules " + targets.dump() + " is neither a list of module names nor \"all-linear\"");
    }
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(origin + ": a field has the wrong type (" + e.what() + ")", "fix adapter_config.json");
  }
  lora_apply(model, cfg, /*seed=*/0);

  const SafetensorsFile file((fs::path(adapter_dir) / "adapter_model.safetensors").string());
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") == std::string::npos) continue;
    const std::string peft = lora_peft_name(item.key());
    const SafetensorsEntry* e = file.find(peft);
    if (!e) {
      throw CheckpointError("adapter " + file.path() + " lacks " + peft + " (for " + item.key() + ")",
                            "adapter_config.json and the weights disagree");
    }
    if (at::IntArrayRef(e->shape) != item.value().sizes()) {
      throw CheckpointError("adapter tensor " + peft + " in " + file.path() +
                            " has the wrong shape for r=" + std::to_string(cfg.r) + " on " + model.config().source);
    }
    item.value().copy_(file.tensor(peft));
    used.insert(peft);
  }
  for (const SafetensorsEntry& e : file.entries()) {
    if (!used.count(e.name)) {
      throw CheckpointError("adapter " + file.path() + " holds " + e.name + ", which no module of the model takes",
                            "the adapter was trained for another model");
    }
  }
}

std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

std::string lora_peft_name(const std::string& name) { return kPeftPrefix + name; }

}  // namespace ranktune
