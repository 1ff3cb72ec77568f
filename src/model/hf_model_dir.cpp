// A model directory's faults are ModelDirError: model.path is the user's input, and a truncated download there is not
// a damaged training checkpoint. Writing one (llama_save_pretrained, the export) keeps CheckpointError.
#include "ranktune/model/hf_model_dir.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/model/lora.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

const char* const kHintDir =
    "--model.path must be a Hugging Face model directory holding config.json and model.safetensors "
    "(or model.safetensors.index.json and its shards)";

std::string shape_text(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// Lists up to 8 names, then a count: messages stay readable when a whole model mismatches.
std::string name_list(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 8) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

// Checkpoint names we accept without a parameter to load them into.
bool skipped_name(const std::string& name, const LlamaConfig& c) {
  if (name == "lm_head.weight" && c.tie_word_embeddings) return true;  // transformers ties it over the embedding too
  const std::string inv = "rotary_emb.inv_freq";  // a buffer some old exports saved; we recompute it
  return name.size() >= inv.size() && name.compare(name.size() - inv.size(), inv.size(), inv) == 0;
}

// SafetensorsFile reports a damaged file as a CheckpointError; inside a model directory it is the directory's fault.
std::unique_ptr<SafetensorsFile> open_weights(const fs::path& file) {
  try {
    return std::make_unique<SafetensorsFile>(file.string());
  } catch (const CheckpointError& e) {
    throw ModelDirError(e.what(), e.hint());
  }
}

}  // namespace

HfModelDir::HfModelDir(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) throw ModelDirError("model directory " + dir + " does not exist", kHintDir);
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const nlohmann::json::exception& e) {
      throw ModelDirError(index.string() + " is not valid JSON (" + e.what() + ")", "re-download the model");
    }
    if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object()) {
      throw ModelDirError(index.string() + " has no \"weight_map\" object", "re-download the model");
    }
    std::map<std::string, std::size_t> file_index;
    for (const auto& [name, file] : j.at("weight_map").items()) {
      if (!file.is_string()) throw ModelDirError(index.string() + ": weight_map entry " + name + " is not a file name");
      const std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
        throw ModelDirError(index.string() + ": weight_map entry " + name + " names \"" + f +
                            "\", not a file of the model directory");
      }
      auto [it, inserted] = file_index.emplace(f, files_.size());
      if (inserted) {
        const fs::path shard = fs::path(dir) / f;
        if (!fs::exists(shard)) {
          throw ModelDirError("shard " + shard.string() + " listed in " + index.string() + " (for " + name +
                                  ") does not exist",
                              "the download is incomplete: fetch every model-*.safetensors");
        }
        files_.push_back(open_weights(shard));
      }
      if (!files_[it->second]->find(name)) {
        throw ModelDirError(index.string() + " places tensor " + name + " in " + f + ", which does not hold it",
                            "the index and the shards disagree: re-download the model");
      }
      where_.emplace(name, it->second);
    }
  } else if (fs::exists(single)) {
    files_.push_back(open_weights(single));
    for (const SafetensorsEntry& e : files_[0]->entries()) where_.emplace(e.name, 0);
  } else if (fs::exists(fs::path(dir) / "pytorch_model.bin") ||
             fs::exists(fs::path(dir) / "pytorch_model.bin.index.json")) {
    throw ModelDirError("model directory " + dir + " holds only pytorch_model.bin weights",
                        "convert them to safetensors (python: AutoModelForCausalLM.from_pretrained(dir)"
                        ".save_pretrained(out, safe_serialization=True))");
  } else {
    throw ModelDirError("model directory " + dir + " has neither model.safetensors nor model.safetensors.index.json",
                        kHintDir);
  }
}

std::vector<std::string> HfModelDir::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const SafetensorsEntry* HfModelDir::find(std::string_view name) const {
  const auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(name);
}

at::Tensor HfModelDir::tensor(std::string_view name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw ModelDirError("model directory " + dir_ + " has no tensor " + std::string(name));
  return files_[it->second]->tensor(name);
}

const std::string& HfModelDir::file_of(std::string_view name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw ModelDirError("model directory " + dir_ + " has no tensor " + std::string(name));
  return files_[it->second]->path();
}

void llama_load_weights(LlamaImpl& model, const HfModelDir& files) {
  const LlamaConfig& c = model.config();
  std::vector<std::string> missing, unexpected;
  std::set<std::string> expected;
  for (const auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) continue;
    expected.insert(item.key());
    if (!files.find(item.key())) missing.push_back(item.key());
  }
  for (const std::string& name : files.names()) {
    if (!expected.count(name) && !skipped_name(name, c)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string what = "model directory " + files.dir() + " does not match its config (" + c.source + "):";
    if (!missing.empty()) what += " missing " + name_list(missing) + ";";
    if (!unexpected.empty()) what += " unexpected " + name_list(unexpected) + ";";
    what.pop_back();
    throw ModelDirError(what,
                        "the weights belong to another architecture or config.json was edited; "
                        "use the config.json that came with the weights");
  }
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) continue;
    at::Tensor& p = item.value();
    const SafetensorsEntry* e = files.find(item.key());
    if (at::IntArrayRef(e->shape) != p.sizes()) {
      throw ModelDirError("tensor " + item.key() + " in " + files.file_of(item.key()) + " has shape " +
                              shape_text(e->shape) + " but " + c.source + " implies " + shape_text(p.sizes()),
                          "config.json does not describe these weights");
    }
    if (!at::isFloatingType(e->dtype)) {
      throw ModelDirError("tensor " + item.key() + " in " + files.file_of(item.key()) + " is " +
                              safetensors_dtype_name(e->dtype) + ", not a floating-point weight",
                          "quantized or packed checkpoints are not supported; use the bf16/fp16/fp32 weights");
    }
    p.copy_(files.tensor(item.key()));
  }
}

Llama llama_from_pretrained(const std::string& dir, const at::TensorOptions& options) {
  const fs::path config = fs::path(dir) / "config.json";
  if (!fs::exists(config)) {
    throw ModelDirError(fs::is_directory(dir) ? "model directory " + dir + " has no config.json"
                                              : "model directory " + dir + " does not exist",
                        kHintDir);
  }
  Llama model(llama_config_load(config.string()), options);
  llama_load_weights(*model, HfModelDir(dir));
  return model;
}

void llama_save_pretrained(LlamaImpl& model, const std::string& dir, at::ScalarType dtype) {
  if (dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat) {
    throw CheckpointError("cannot save the model to " + dir + " as " + std::string(c10::toString(dtype)),
                          "save as bfloat16, float16 or float32");
  }
  if (lora_attached(model)) {
    throw CheckpointError("cannot save the model to " + dir + " with LoRA adapters attached",
                          "merge them first (lora_merge) or export the adapter alone");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError("cannot create " + dir + ": " + ec.message(), "check the path and permissions");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model.named_parameters()) tensors.emplace_back(item.key(), item.value().detach().to(dtype));
  safetensors_save((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});

  LlamaConfig c = model.config();
  c.dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  const fs::path config = fs::path(dir) / "config.json";
  const std::string tmp = config.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << llama_config_to_json(c);
    if (!out.flush()) throw CheckpointError("cannot write " + tmp, "check free space and permissions");
  }
  fs::rename(tmp, config, ec);
  if (ec) throw CheckpointError("cannot rename " + tmp + " to " + config.string() + ": " + ec.message());
}

}  // namespace ranktune
