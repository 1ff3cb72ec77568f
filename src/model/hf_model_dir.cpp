// A model directory's faults are ModelDirError: model.path is the user's input, and a truncated download there is not
// a damaged training checkpoint. Writing one (llama_save_pretrained, the export) keeps CheckpointError.
#include "ranktune/model/hf_model_dir.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/model/bnb_checkpoint.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/quantize.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

const char* const kHintConfig =
    "config.json does not describe these weights (edited, or from another model): use the config.json that came "
    "with them";
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

// One dimension of a tensor that config.json implies, and the field(s) it comes from, for messages.
struct Dim {
  std::int64_t size;
  std::string field;  // "vocab_size = 96", "num_attention_heads x head_dim = 4 x 16 = 64"
};

Dim dim(const char* field, std::int64_t v) { return {v, std::string(field) + " = " + std::to_string(v)}; }

// a x b without overflow: an absurd pair gives -1 (shown as ?), which matches no tensor; the message shows the factors.
Dim dim_product(const char* a_name, std::int64_t a, const char* b_name, std::int64_t b) {
  std::int64_t p = 0;
  if (__builtin_mul_overflow(a, b, &p)) p = -1;
  return {p, std::string(a_name) + " x " + b_name + " = " + std::to_string(a) + " x " + std::to_string(b) +
                 (p < 0 ? std::string() : " = " + std::to_string(p))};
}

struct ExpectedTensor {
  std::string name;
  std::vector<Dim> dims;
  std::string needs;  // the setting that asks for this tensor when it is optional ("tie_word_embeddings = false")
  // bitsandbytes 4-bit (config.json's quantization_config): the uint8 codes of a linear, or one of its quant-state
  // tensors, whose sizes and dtypes nf4_weight_read checks against the linear's shape (bnb_checkpoint.h).
  enum { dense, nf4_codes, nf4_state } kind = dense;
};

// Every tensor config.json implies, by transformers' name (the registration order of llama.cpp's modules). Built only
// after the layer count matched the files, so its size is bounded by theirs.
std::vector<ExpectedTensor> expected_tensors(const LlamaConfig& c) {
  const Dim d = dim("hidden_size", c.hidden_size), v = dim("vocab_size", c.vocab_size),
            f = dim("intermediate_size", c.intermediate_size);
  const Dim q = dim_product("num_attention_heads", c.num_heads, "head_dim", c.head_dim);
  const Dim kv = dim_product("num_key_value_heads", c.num_kv_heads, "head_dim", c.head_dim);
  const std::string qkv_bias = c.model_type == "qwen2" ? "model_type = qwen2" : "attention_bias = true";
  std::vector<ExpectedTensor> out{{"model.embed_tokens.weight", {v, d}, ""}};
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    const auto linear = [&](const std::string& name, const Dim& o, const Dim& in, bool bias, const std::string& needs) {
      if (c.bnb_nf4) {  // [out x in / 2, 1] uint8: the linear's size is still bounded by the file's
        std::int64_t n = 0;
        if (o.size < 0 || in.size < 0 || __builtin_mul_overflow(o.size, in.size, &n)) n = -3;  // ? in messages
        out.push_back({l + name + ".weight",
                       {{(n + 1) / 2, o.field + " and " + in.field + " (4-bit codes, two a byte)"}, {1, "1"}},
                       "",
                       ExpectedTensor::nf4_codes});
        const std::vector<std::string> state = bnb_nf4_tensor_names(l + name + ".");
        for (std::size_t k = 1; k < state.size(); ++k) out.push_back({state[k], {}, "", ExpectedTensor::nf4_state});
      } else {
        out.push_back({l + name + ".weight", {o, in}, ""});
      }
      if (bias) out.push_back({l + name + ".bias", {o}, needs});
    };
    linear("self_attn.q_proj", q, d, c.qkv_bias, qkv_bias);
    linear("self_attn.k_proj", kv, d, c.qkv_bias, qkv_bias);
    linear("self_attn.v_proj", kv, d, c.qkv_bias, qkv_bias);
    linear("self_attn.o_proj", d, q, c.o_bias, "attention_bias = true");
    linear("mlp.gate_proj", f, d, c.mlp_bias, "mlp_bias = true");
    linear("mlp.up_proj", f, d, c.mlp_bias, "mlp_bias = true");
    linear("mlp.down_proj", d, f, c.mlp_bias, "mlp_bias = true");
    out.push_back({l + "input_layernorm.weight", {d}, ""});
    out.push_back({l + "post_attention_layernorm.weight", {d}, ""});
  }
  out.push_back({"model.norm.weight", {d}, ""});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {v, d}, "tie_word_embeddings = false"});
  return out;
}

// num_hidden_layers against the layers the tensor names hold (model.layers.<i>.*), before a table of that many layers
// is built: the count a corrupted config.json could make absurd.
void check_layer_count(const LlamaConfig& c, const HfModelDir& files) {
  const std::string prefix = "model.layers.";
  std::set<std::int64_t> layers;
  for (const std::string& name : files.names()) {
    if (name.rfind(prefix, 0) != 0) continue;
    std::int64_t i = -1;
    const char* b = name.data() + prefix.size();
    const char* e = name.data() + name.size();
    const auto [p, ec] = std::from_chars(b, e, i);
    if (ec == std::errc() && i >= 0 && p != e && *p == '.') layers.insert(i);
  }
  const std::int64_t held = layers.empty() ? 0 : *layers.rbegin() + 1;
  if (c.num_layers != held) {
    throw ModelDirError("num_hidden_layers = " + std::to_string(c.num_layers) + " in " + c.source + " does not match " +
                            files.weights_file() + ": " +
                            (held == 0 ? std::string("it holds no model.layers.* tensor")
                                       : "its last layer is model.layers." + std::to_string(held - 1) + " (" +
                                             std::to_string(held) + " layers)"),
                        kHintConfig);
  }
  std::int64_t next = 0;  // the set is sorted: the first index it skips is the first layer without a tensor
  for (std::int64_t i : layers) {
    if (i != next) break;
    ++next;
  }
  if (next != held) {
    throw ModelDirError(files.weights_file() + " holds model.layers." + std::to_string(held - 1) +
                            " but no tensor of model.layers." + std::to_string(next),
                        "the weights are incomplete: re-download the model");
  }
}

LlamaConfig read_config(const std::string& dir) {
  const fs::path config = fs::path(dir) / "config.json";
  if (!fs::exists(config)) {
    throw ModelDirError(fs::is_directory(dir) ? "model directory " + dir + " has no config.json"
                                              : "model directory " + dir + " does not exist",
                        kHintDir);
  }
  return llama_config_load(config.string());
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
    weights_file_ = index.string();
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
    weights_file_ = single.string();
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

void hf_model_dir_check(const LlamaConfig& c, const HfModelDir& files) {
  check_layer_count(c, files);
  const std::vector<ExpectedTensor> expected = expected_tensors(c);
  std::vector<std::string> missing, unexpected;
  std::string needs;
  std::set<std::string> names;
  for (const ExpectedTensor& t : expected) {
    names.insert(t.name);
    if (files.find(t.name)) continue;
    missing.push_back(t.name);
    if (needs.empty()) needs = t.needs;
  }
  for (const std::string& name : files.names()) {
    if (!names.count(name) && !skipped_name(name, c)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string what = "model directory " + files.dir() + " does not match its config (" + c.source + "):";
    if (!missing.empty())
      what += " missing " + name_list(missing) + (needs.empty() ? "" : " (for " + needs + ")") + ";";
    if (!unexpected.empty()) what += " unexpected " + name_list(unexpected) + ";";
    what.pop_back();
    throw ModelDirError(what,
                        "the weights belong to another architecture or config.json was edited; "
                        "use the config.json that came with the weights");
  }
  for (const ExpectedTensor& t : expected) {
    if (t.kind == ExpectedTensor::nf4_state) continue;
    const SafetensorsEntry& e = *files.find(t.name);
    const bool same_ndim = e.shape.size() == t.dims.size();
    std::size_t bad = 0;  // the first dimension that differs names its field
    while (same_ndim && bad < t.dims.size() && e.shape[bad] == t.dims[bad].size) ++bad;
    if (!same_ndim || bad < t.dims.size()) {
      std::string want;
      for (const Dim& d : t.dims) want += (want.empty() ? "" : ", ") + (d.size < 0 ? "?" : std::to_string(d.size));
      throw ModelDirError((same_ndim ? t.dims[bad].field + " in " : std::string()) + c.source + " does not match " +
                              files.file_of(t.name) + ": " + t.name + " is " + shape_text(e.shape) + ", not [" + want +
                              "]",
                          kHintConfig);
    }
    if (t.kind == ExpectedTensor::nf4_codes ? e.dtype != at::kByte : !at::isFloatingType(e.dtype)) {
      throw ModelDirError("tensor " + t.name + " in " + files.file_of(t.name) + " is " +
                              safetensors_dtype_name(e.dtype) +
                              (t.kind == ExpectedTensor::nf4_codes ? ", not the U8 codes of a bitsandbytes 4-bit weight"
                                                                   : ", not a floating-point weight"),
                          "of quantized checkpoints only bitsandbytes 4-bit NF4 ones load, with their "
                          "quantization_config in config.json (docs/models.md); else use the bf16/fp16/fp32 weights");
    }
  }
}

LlamaConfig hf_model_config(const std::string& dir) {
  LlamaConfig c = read_config(dir);
  hf_model_dir_check(c, HfModelDir(dir));
  return c;
}

LlamaConfig hf_model_config_unchecked(const std::string& dir) { return read_config(dir); }

void llama_load_weights(LlamaImpl& model, const HfModelDir& files) {
  hf_model_dir_check(model.config(), files);
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) continue;
    at::Tensor& p = item.value();
    const SafetensorsEntry* e = files.find(item.key());
    // hf_model_dir_check derived the names and shapes from the config; a parameter outside them is a bug of its table.
    if (!e || at::IntArrayRef(e->shape) != p.sizes()) {
      throw LibraryError("parameter " + item.key() + " " + shape_text(p.sizes()) +
                         " is not among the tensors that hf_model_dir_check expects");
    }
    p.copy_(files.tensor(item.key()));
  }
}

Llama llama_from_pretrained(const std::string& dir, const at::TensorOptions& options) {
  LlamaConfig c = read_config(dir);
  // Its decoder linears have no 16-bit weight to copy: model/quantize.h's loader takes them as they are.
  if (c.bnb_nf4)
    throw ConfigError("model directory " + dir +
                          " holds bitsandbytes 4-bit NF4 weights, which a 16-bit load cannot use",
                      "load it 4-bit (model.quantize=nf4, which `ranktune train` and `generate` choose for such a "
                      "directory), or use the model's bf16/fp16/fp32 weights");
  const HfModelDir files(dir);
  hf_model_dir_check(c, files);  // before the model allocates what the config asks for
  Llama model(std::move(c), options);
  llama_load_weights(*model, files);
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
  if (llama_quantized(model)) {
    throw CheckpointError("cannot save the model to " + dir + " with a 4-bit (NF4) base",
                          "merge first: lora_merge dequantizes the base to 16 bits");
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
