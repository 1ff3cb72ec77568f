// What transformers writes for a bitsandbytes 4-bit model (its Bnb4BitHfQuantizer and bnb's QuantState.as_dict):
// config.json's quantization_config with transformers' defaults (an absent bnb_4bit_quant_type is fp4, an absent
// bnb_4bit_use_double_quant is false), and per Linear4bit six tensors, the last holding QuantState's JSON. Only the
// exact layout nf4.h reproduces is accepted: anything else would dequantize to other weights without an error.
#include "ranktune/model/bnb_checkpoint.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/model/block.h"
#include "ranktune/model/hf_model_dir.h"

namespace ranktune {
namespace {

using nlohmann::json;

const char* const kHintQuant =
    "ranktune loads bitsandbytes 4-bit NF4 checkpoints with double quantization (load_in_4bit, "
    "bnb_4bit_quant_type nf4, bnb_4bit_use_double_quant true); otherwise use the model's bf16/fp16/fp32 weights with "
    "--model.quantize=nf4";
const char* const kHintTensor =
    "the checkpoint is damaged or was not written by transformers + bitsandbytes: re-download it, or use the "
    "unquantized weights with --model.quantize=nf4";

[[noreturn]] void refuse_config(const std::string& origin, const std::string& what) {
  throw ConfigError(origin + ": quantization_config." + what, kHintQuant);
}

// transformers' should_convert_module: a pattern skips a module when it matches from the start up to a module
// boundary (as a regex, so "model.layers.*" counts), or when the module name ends with it.
bool skips(const std::string& pattern, const std::string& module) {
  if (module.size() >= pattern.size() && module.compare(module.size() - pattern.size(), pattern.size(), pattern) == 0)
    return true;
  try {
    const std::regex ahead("^(?:" + pattern + ")(?=\\.|$)");
    if (std::regex_search(module, ahead)) return true;
    std::smatch m;
    const std::regex plain("^(?:" + pattern + ")");
    return std::regex_search(module, m, plain) && m.length(0) > 0 && m.str(0).back() == '.';
  } catch (const std::regex_error&) {  // not a regex: the literal prefix rule alone
    return module.rfind(pattern, 0) == 0 &&
           (module.size() == pattern.size() || module[pattern.size()] == '.' || pattern.back() == '.');
  }
}

bool truthy(const json& q, const char* key) {
  return q.contains(key) && q.at(key).is_boolean() && q.at(key).get<bool>();
}

std::string tensor_text(const std::string& file, const std::string& name) { return file + ": " + name; }

}  // namespace

HfQuantization hf_quantization_parse(std::string_view config_json, const std::string& origin) {
  json j;
  try {
    j = json::parse(config_json);
  } catch (const json::exception& e) {
    throw ConfigError(origin + ": not valid JSON: " + e.what(), "fix or re-download config.json");
  }
  if (!j.is_object() || !j.contains("quantization_config") || j.at("quantization_config").is_null())
    return HfQuantization::none;
  const json& q = j.at("quantization_config");
  if (!q.is_object()) {
    throw ConfigError(origin + ": \"quantization_config\" must be an object, got " + q.dump(), "fix config.json");
  }
  const auto string_of = [&](const char* key, const std::string& def) -> std::string {
    if (!q.contains(key) || q.at(key).is_null()) return def;
    if (!q.at(key).is_string()) refuse_config(origin, std::string(key) + " must be a string, got " + q.at(key).dump());
    return q.at(key).get<std::string>();
  };
  const bool bnb_flags = q.contains("load_in_4bit") || q.contains("load_in_8bit") || q.contains("_load_in_4bit");
  const std::string method = string_of("quant_method", bnb_flags ? "bitsandbytes" : "");
  if (method != "bitsandbytes") {
    refuse_config(origin, "quant_method " + (method.empty() ? std::string("is missing") : "\"" + method + "\"") +
                              ": only bitsandbytes 4-bit NF4 checkpoints load (GPTQ, AWQ and the other methods store "
                              "other formats)");
  }
  if (truthy(q, "load_in_8bit") || truthy(q, "_load_in_8bit")) {
    refuse_config(origin, "load_in_8bit is true: 8-bit (LLM.int8) bitsandbytes checkpoints are not supported");
  }
  if (!truthy(q, "load_in_4bit") && !truthy(q, "_load_in_4bit")) {
    refuse_config(origin, "load_in_4bit is not true: only 4-bit bitsandbytes checkpoints load");
  }
  const std::string type = string_of("bnb_4bit_quant_type", "fp4");  // transformers' default
  if (type != "nf4") {
    refuse_config(origin, "bnb_4bit_quant_type is \"" + type + "\"" +
                              (q.contains("bnb_4bit_quant_type") ? "" : " (absent: transformers' default)") +
                              ": only nf4 is supported");
  }
  if (!truthy(q, "bnb_4bit_use_double_quant")) {
    refuse_config(origin,
                  "bnb_4bit_use_double_quant is not true: only double-quantized absmaxes (QLoRA's format) are "
                  "supported");
  }
  const std::string storage = string_of("bnb_4bit_quant_storage", "uint8");
  if (storage != "uint8") {
    refuse_config(origin, "bnb_4bit_quant_storage is \"" + storage + "\": only uint8 packing is supported");
  }
  for (const auto& [key, value] : q.items()) {
    if (key.find("blocksize") != std::string::npos && !(value.is_number_integer() && value.get<std::int64_t>() == 64))
      refuse_config(origin, key + " is " + value.dump() + ": only blocks of 64 are supported");
  }
  if (q.contains("llm_int8_skip_modules") && !q.at("llm_int8_skip_modules").is_null()) {
    const json& skip = q.at("llm_int8_skip_modules");
    if (!skip.is_array()) refuse_config(origin, "llm_int8_skip_modules must be a list, got " + skip.dump());
    std::int64_t layers = 1;
    if (j.contains("num_hidden_layers") && j.at("num_hidden_layers").is_number_integer())
      layers = std::clamp<std::int64_t>(j.at("num_hidden_layers").get<std::int64_t>(), 1, 100000);
    for (const json& entry : skip) {
      if (!entry.is_string()) refuse_config(origin, "llm_int8_skip_modules holds " + entry.dump() + ", not a name");
      const std::string pattern = entry.get<std::string>();
      if (pattern.empty()) continue;
      for (std::int64_t i = 0; i < layers; ++i) {
        for (std::string_view linear : kDecoderLinears) {
          const std::string module = "model.layers." + std::to_string(i) + "." + std::string(linear);
          if (skips(pattern, module)) {
            refuse_config(origin, "llm_int8_skip_modules entry \"" + pattern + "\" leaves " + module +
                                      " unquantized: mixed 4-bit/16-bit decoders are not supported");
          }
        }
      }
    }
  }
  return HfQuantization::bnb_nf4;
}

bool hf_model_dir_is_bnb_nf4(const std::string& dir) {
  const std::filesystem::path config = std::filesystem::path(dir) / "config.json";
  std::ifstream in(config, std::ios::binary);
  if (!in) {
    throw ModelDirError(
        "cannot read " + config.string(),
        "--model.path must be a Hugging Face model directory holding config.json and model.safetensors");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return hf_quantization_parse(text.str(), config.string()) == HfQuantization::bnb_nf4;
}

std::vector<std::string> bnb_nf4_tensor_names(const std::string& prefix) {
  const std::string w = prefix + "weight";
  return {w,
          w + ".absmax",
          w + ".quant_map",
          w + ".nested_absmax",
          w + ".nested_quant_map",
          w + ".quant_state.bitsandbytes__nf4"};
}

namespace {

// Where a linear's six tensors come from: one file, or a sharded directory (a shard boundary may fall between them).
struct TensorSource {
  std::function<bool(const std::string&)> has;
  std::function<at::Tensor(const std::string&)> tensor;
  std::function<std::string(const std::string&)> file;  // names the file in messages
};

Nf4Weight read_nf4(const TensorSource& file, const std::string& prefix, at::Device device,
                   const std::vector<std::int64_t>& expected_shape) {
  const std::vector<std::string> names = bnb_nf4_tensor_names(prefix);
  for (const std::string& name : names) {
    if (!file.has(name)) {
      throw ModelDirError(tensor_text(file.file(name), name) + " is missing: a bitsandbytes 4-bit linear needs " +
                              prefix +
                              "weight and its absmax, quant_map, nested_absmax, nested_quant_map and "
                              "quant_state.bitsandbytes__nf4",
                          kHintTensor);
    }
  }
  const std::string& state_name = names[5];
  const auto bad = [&](const std::string& name, const std::string& what) {
    throw ModelDirError(tensor_text(file.file(name), name) + ": " + what, kHintTensor);
  };

  // The quant state: JSON text stored as a uint8 tensor.
  const at::Tensor bytes = file.tensor(state_name);
  if (bytes.scalar_type() != at::kByte || bytes.dim() != 1) bad(state_name, "is not a 1-d uint8 tensor of JSON bytes");
  const at::Tensor b = bytes.contiguous();
  const std::string text(reinterpret_cast<const char*>(b.data_ptr<std::uint8_t>()),
                         static_cast<std::size_t>(b.numel()));
  json s;
  try {
    s = json::parse(text);
  } catch (const json::exception& e) {
    bad(state_name, std::string("is not valid JSON (") + e.what() + ")");
  }
  if (!s.is_object()) bad(state_name, "is not a JSON object");
  const auto field = [&](const char* key) -> const json& {
    if (!s.contains(key)) bad(state_name, std::string("has no \"") + key + "\"");
    return s.at(key);
  };
  const auto integer = [&](const char* key) {
    const json& v = field(key);
    if (!v.is_number_integer()) bad(state_name, std::string(key) + " must be an integer, got " + v.dump());
    return v.get<std::int64_t>();
  };
  const auto string = [&](const char* key) {
    const json& v = field(key);
    if (!v.is_string()) bad(state_name, std::string(key) + " must be a string, got " + v.dump());
    return v.get<std::string>();
  };
  const std::string type = string("quant_type");
  if (type != "nf4") bad(state_name, "quant_type is \"" + type + "\": only nf4 is supported");
  const std::int64_t blocksize = integer("blocksize");
  if (blocksize != kNf4BlockSize) {
    bad(state_name,
        "blocksize is " + std::to_string(blocksize) + ": only " + std::to_string(kNf4BlockSize) + " is supported");
  }
  if (!s.contains("nested_blocksize")) {
    bad(state_name, "has no nested_* fields: absmaxes without double quantization are not supported");
  }
  const std::int64_t nested = integer("nested_blocksize");
  if (nested != kNf4NestedBlockSize) {
    bad(state_name, "nested_blocksize is " + std::to_string(nested) + ": only " + std::to_string(kNf4NestedBlockSize) +
                        " is supported");
  }
  const std::string nested_dtype = string("nested_dtype");
  if (nested_dtype != "float32") bad(state_name, "nested_dtype is \"" + nested_dtype + "\": only float32 is supported");
  const json& offset = field("nested_offset");
  if (!offset.is_number() || !std::isfinite(offset.get<double>()))
    bad(state_name, "nested_offset must be a finite number, got " + offset.dump());
  const std::string dtype = string("dtype");
  Nf4Weight w;
  if (dtype == "bfloat16") {
    w.dtype = at::kBFloat16;
  } else if (dtype == "float16") {
    w.dtype = at::kHalf;
  } else if (dtype == "float32") {
    w.dtype = at::kFloat;
  } else {
    bad(state_name, "dtype is \"" + dtype + "\": bfloat16, float16 or float32 expected");
  }
  const json& shape = field("shape");
  if (!shape.is_array() || shape.empty()) bad(state_name, "shape must be a non-empty list, got " + shape.dump());
  std::int64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_integer() || d.get<std::int64_t>() <= 0 ||
        __builtin_mul_overflow(numel, d.get<std::int64_t>(), &numel))
      bad(state_name, "shape " + shape.dump() + " is not a list of positive sizes");
    w.shape.push_back(d.get<std::int64_t>());
  }
  if (!expected_shape.empty() && w.shape != expected_shape) {
    std::string want;
    for (std::int64_t d : expected_shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
    bad(state_name, "shape is " + shape.dump() + ", the model's " + prefix + "weight is [" + want + "]");
  }
  w.offset = static_cast<float>(offset.get<double>());

  // The tensors, checked against that shape before use (nf4_check: dtypes and sizes).
  const auto load = [&](const std::string& name) {
    return file.tensor(name).to(device, /*non_blocking=*/false, /*copy=*/true);
  };
  w.packed = load(names[0]);
  w.absmax = load(names[1]);
  w.quant_map = load(names[2]);
  w.nested_absmax = load(names[3]);
  w.nested_quant_map = load(names[4]);
  const std::pair<const at::Tensor*, const std::string*> tables[] = {{&w.packed, &names[0]},
                                                                     {&w.absmax, &names[1]},
                                                                     {&w.quant_map, &names[2]},
                                                                     {&w.nested_absmax, &names[3]},
                                                                     {&w.nested_quant_map, &names[4]}};
  const std::int64_t blocks = (numel + kNf4BlockSize - 1) / kNf4BlockSize;
  const std::int64_t sizes[] = {(numel + 1) / 2, blocks, 16, (blocks + kNf4NestedBlockSize - 1) / kNf4NestedBlockSize,
                                256};
  const at::ScalarType dtypes[] = {at::kByte, at::kByte, at::kFloat, at::kFloat, at::kFloat};
  for (int i = 0; i < 5; ++i) {
    const at::Tensor& t = *tables[i].first;
    if (t.scalar_type() != dtypes[i] || t.numel() != sizes[i]) {
      std::ostringstream got;
      got << safetensors_dtype_name(t.scalar_type()) << " " << t.sizes();
      bad(*tables[i].second,
          "is " + got.str() + ", not " + safetensors_dtype_name(dtypes[i]) + " with " + std::to_string(sizes[i]) +
              " elements (for shape " + shape.dump() + ")" +
              (i == 1 && t.scalar_type() == at::kFloat ? ": absmaxes without double quantization" : ""));
    }
  }
  w.packed = w.packed.reshape({(numel + 1) / 2, 1});
  w.absmax = w.absmax.reshape(-1);
  w.quant_map = w.quant_map.reshape(-1);
  w.nested_absmax = w.nested_absmax.reshape(-1);
  w.nested_quant_map = w.nested_quant_map.reshape(-1);
  if (!at::equal(w.quant_map.cpu(), nf4_code())) bad(names[2], "is not the NF4 code table (another 4-bit type?)");
  if (!at::isfinite(w.nested_absmax).all().item<bool>()) bad(names[3], "holds NaN or Inf");
  if (!at::isfinite(w.nested_quant_map).all().item<bool>()) bad(names[4], "holds NaN or Inf");
  try {
    nf4_check(w);
  } catch (const LibraryError& e) {
    bad(prefix + "weight", e.what());
  }
  return w;
}

}  // namespace

Nf4Weight nf4_weight_read(const SafetensorsFile& file, const std::string& prefix, at::Device device,
                          const std::vector<std::int64_t>& expected_shape) {
  const TensorSource source{[&](const std::string& n) { return file.find(n) != nullptr; },
                            [&](const std::string& n) { return file.tensor(n); },
                            [&](const std::string&) { return file.path(); }};
  return read_nf4(source, prefix, device, expected_shape);
}

Nf4Weight nf4_weight_read(const HfModelDir& files, const std::string& prefix, at::Device device,
                          const std::vector<std::int64_t>& expected_shape) {
  const TensorSource source{[&](const std::string& n) { return files.find(n) != nullptr; },
                            [&](const std::string& n) { return files.tensor(n); },
                            [&](const std::string& n) {
                              return files.find(n) ? files.file_of(n) : files.weights_file();
                            }};
  return read_nf4(source, prefix, device, expected_shape);
}

}  // namespace ranktune
