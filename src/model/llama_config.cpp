#include "ranktune/model/llama_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/model/bnb_checkpoint.h"

namespace ranktune {
namespace {

using nlohmann::json;

const char* const kSupportedTypes = "llama, mistral, qwen2";
const char* const kHintSupported =
    "ranktune supports Llama-family decoders: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM "
    "(docs/models.md lists the fields)";

[[noreturn]] void refuse(const std::string& origin, const std::string& what, std::string hint = kHintSupported) {
  throw ConfigError(origin + ": " + what, std::move(hint));
}

// Readers of one field; a wrong JSON type is an error naming the field, an absent or null field gives the default.
struct Fields {
  const json& j;
  const std::string& origin;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  std::int64_t integer(const char* key, std::int64_t def, bool required = false) const {
    if (!has(key)) {
      if (required)
        refuse(origin, std::string("missing required field \"") + key + "\"", "is this a model's config.json?");
      return def;
    }
    const json& v = j.at(key);
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<std::int64_t>(v.get<double>()))) {
      return static_cast<std::int64_t>(v.get<double>());
    }
    refuse(origin, std::string("field \"") + key + "\" must be an integer, got " + v.dump(), "fix config.json");
  }

  double number(const char* key, double def) const {
    if (!has(key)) return def;
    const json& v = j.at(key);
    if (!v.is_number())
      refuse(origin, std::string("field \"") + key + "\" must be a number, got " + v.dump(), "fix config.json");
    return v.get<double>();
  }

  bool boolean(const char* key, bool def) const {
    if (!has(key)) return def;
    const json& v = j.at(key);
    if (!v.is_boolean())
      refuse(origin, std::string("field \"") + key + "\" must be true or false, got " + v.dump(), "fix config.json");
    return v.get<bool>();
  }

  std::string string(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = j.at(key);
    if (!v.is_string())
      refuse(origin, std::string("field \"") + key + "\" must be a string, got " + v.dump(), "fix config.json");
    return v.get<std::string>();
  }
};

// HF defaults differ per model class; these are the values transformers uses when config.json omits a field.
struct TypeDefaults {
  std::int64_t max_position_embeddings;
};

TypeDefaults type_defaults(const std::string& model_type) {
  if (model_type == "mistral") return {4096 * 32};
  if (model_type == "qwen2") return {32768};
  return {2048};
}

std::string expected_architecture(const std::string& model_type) {
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return "LlamaForCausalLM";
}

// Rotary settings: the 4.x layout (rope_theta + rope_scaling) and the 5.x layout (rope_parameters) both occur.
void parse_rope(const json& j, const std::string& origin, LlamaConfig& c) {
  const Fields top{j, origin};
  c.rope_theta = top.number("rope_theta", 10000.0);
  const json* params = nullptr;
  std::string field;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (j.contains(key) && !j.at(key).is_null()) {
      if (params) refuse(origin, "both \"rope_parameters\" and \"rope_scaling\" are set", "keep one of them");
      params = &j.at(key);
      field = key;
    }
  }
  if (top.has("partial_rotary_factor") && top.number("partial_rotary_factor", 1.0) != 1.0) {
    refuse(origin, "partial_rotary_factor " + j.at("partial_rotary_factor").dump() +
                       " is not supported (rotary on "
                       "the whole head only)");
  }
  if (!params) return;
  if (!params->is_object())
    refuse(origin, "\"" + field + "\" must be an object, got " + params->dump(), "fix config.json");
  for (const auto& [key, value] : params->items()) {
    if (value.is_object()) {
      refuse(origin, "\"" + field + "\" holds per-layer-type rotary settings (\"" + key + "\"): not supported");
    }
  }
  const Fields p{*params, origin};
  std::string type = p.string("rope_type", p.string("type", "default"));
  c.rope_theta = p.number("rope_theta", c.rope_theta);
  if (p.has("partial_rotary_factor") && p.number("partial_rotary_factor", 1.0) != 1.0) {
    refuse(origin, field + ".partial_rotary_factor is not supported (rotary on the whole head only)");
  }
  if (type == "default") return;
  if (type != "llama3") {
    refuse(
        origin, field + " type \"" + type + "\" is not supported (supported: default, llama3)",
        "rope types linear, dynamic, yarn, longrope change the rotary math; ranktune implements only llama3 scaling");
  }
  c.rope_scaling.type = "llama3";
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor"}) {
    if (!p.has(key)) refuse(origin, field + " of type llama3 lacks \"" + key + "\"", "fix config.json");
  }
  c.rope_scaling.factor = p.number("factor", 1);
  c.rope_scaling.low_freq_factor = p.number("low_freq_factor", 1);
  c.rope_scaling.high_freq_factor = p.number("high_freq_factor", 4);
  c.rope_scaling.original_max_position_embeddings =
      p.integer("original_max_position_embeddings", c.max_position_embeddings);
}

// Mistral's sliding_window applies to every layer; Qwen2's only when use_sliding_window and from max_window_layers on.
void parse_sliding_window(const json& j, const std::string& origin, LlamaConfig& c) {
  const Fields f{j, origin};
  if (c.model_type == "mistral") {
    c.sliding_window = f.integer("sliding_window", 0);
    return;
  }
  if (c.model_type == "qwen2") {
    const bool use = f.boolean("use_sliding_window", false);
    const std::int64_t window = f.integer("sliding_window", 0);
    bool sliding_layer = false;
    if (f.has("layer_types")) {
      const json& types = j.at("layer_types");
      if (!types.is_array()) refuse(origin, "\"layer_types\" must be a list", "fix config.json");
      for (const json& t : types) {
        const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
        if (s == "sliding_attention") {
          sliding_layer = true;
        } else if (s != "full_attention") {
          refuse(origin, "layer type \"" + s + "\" in \"layer_types\" is not supported");
        }
      }
    } else if (use) {
      sliding_layer = f.integer("max_window_layers", 28) < c.num_layers;
    }
    if (use && sliding_layer && window > 0) c.sliding_window = window;
    return;
  }
  if (f.has("sliding_window")) refuse(origin, "\"sliding_window\" is not a field of model_type llama");
}

}  // namespace

LlamaConfig llama_config_from_json(std::string_view text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    refuse(origin, std::string("not valid JSON: ") + e.what(), "fix or re-download config.json");
  }
  if (!j.is_object()) refuse(origin, "expected a JSON object", "is this a model's config.json?");
  const Fields f{j, origin};
  LlamaConfig c;
  c.source = origin;

  c.model_type = f.string("model_type", "");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    refuse(origin, "model_type \"" + c.model_type + "\" is not supported (supported: " + kSupportedTypes + ")");
  }
  if (f.has("architectures")) {
    const json& archs = j.at("architectures");
    if (!archs.is_array()) refuse(origin, "\"architectures\" must be a list", "fix config.json");
    for (const json& a : archs) {
      const std::string name = a.is_string() ? a.get<std::string>() : a.dump();
      if (name != expected_architecture(c.model_type)) {
        refuse(origin, "architecture \"" + name + "\" is not supported for model_type " + c.model_type + " (expected " +
                           expected_architecture(c.model_type) + ")");
      }
    }
  }
  // bitsandbytes 4-bit NF4 loads as it is (bnb_checkpoint.h); any other quantization_config is refused by name.
  c.bnb_nf4 = hf_quantization_parse(text, origin) == HfQuantization::bnb_nf4;
  const std::string act = f.string("hidden_act", "silu");
  if (act != "silu") refuse(origin, "hidden_act \"" + act + "\" is not supported (SwiGLU with silu only)");
  if (f.number("attention_dropout", 0.0) != 0.0) {
    refuse(origin, "attention_dropout " + j.at("attention_dropout").dump() + " is not supported (0 only)",
           "set \"attention_dropout\": 0.0 (fine-tuning recipes use LoRA dropout instead)");
  }

  c.vocab_size = f.integer("vocab_size", 0, true);
  c.hidden_size = f.integer("hidden_size", 0, true);
  c.intermediate_size = f.integer("intermediate_size", 0, true);
  c.num_layers = f.integer("num_hidden_layers", 0, true);
  c.num_heads = f.integer("num_attention_heads", 0, true);
  c.num_kv_heads = f.integer("num_key_value_heads", c.num_heads);
  c.head_dim = f.integer("head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  if (!f.has("head_dim") && c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    refuse(origin,
           "hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
               std::to_string(c.num_heads) + " and no head_dim is given",
           "fix config.json");
  }
  c.max_position_embeddings = f.integer("max_position_embeddings", type_defaults(c.model_type).max_position_embeddings);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  } else if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
    c.mlp_bias = f.boolean("mlp_bias", false);
  }
  c.dtype = f.string("torch_dtype", f.string("dtype", ""));
  parse_rope(j, origin, c);
  parse_sliding_window(j, origin, c);
  llama_config_validate(c);
  return c;
}

LlamaConfig llama_config_load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError("cannot read model config " + path,
                      "--model.path must be a Hugging Face model directory holding config.json and model.safetensors");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return llama_config_from_json(text.str(), path);
}

LlamaConfig llama_config_from_model(const ModelConfig& m) {
  LlamaConfig c;
  c.model_type = "llama";
  c.source = "[model] section";
  c.vocab_size = m.vocab_size;
  c.hidden_size = m.hidden_size;
  c.intermediate_size = m.intermediate_size;
  c.num_layers = m.num_layers;
  c.num_heads = m.num_heads;
  c.num_kv_heads = m.num_kv_heads;
  c.head_dim = m.num_heads > 0 ? m.hidden_size / m.num_heads : 0;
  c.max_position_embeddings = m.max_seq_len;
  c.rms_norm_eps = m.rms_norm_eps;
  c.rope_theta = m.rope_theta;
  c.tie_word_embeddings = m.tie_embeddings;
  llama_config_validate(c);
  return c;
}

void llama_config_validate(const LlamaConfig& c) {
  const auto positive = [&](const char* name, std::int64_t v) {
    if (v <= 0)
      refuse(c.source, std::string(name) + " must be positive, got " + std::to_string(v), "fix the model shape");
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_layers);
  positive("num_attention_heads", c.num_heads);
  positive("num_key_value_heads", c.num_kv_heads);
  positive("head_dim", c.head_dim);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.num_heads % c.num_kv_heads != 0) {
    refuse(c.source,
           "num_attention_heads " + std::to_string(c.num_heads) + " is not a multiple of num_key_value_heads " +
               std::to_string(c.num_kv_heads),
           "fix the model shape");
  }
  if (c.head_dim % 2 != 0) {
    refuse(c.source, "head_dim " + std::to_string(c.head_dim) + " is odd; rotary embeddings rotate pairs",
           "fix the model shape");
  }
  if (!(c.rms_norm_eps > 0)) refuse(c.source, "rms_norm_eps must be positive", "fix the model shape");
  if (!(c.rope_theta > 0)) refuse(c.source, "rope_theta must be positive", "fix the model shape");
  if (c.sliding_window < 0) refuse(c.source, "sliding_window must be positive or null", "fix config.json");
  if (c.rope_scaling.type == "llama3") {
    const RopeScaling& s = c.rope_scaling;
    if (!(s.factor > 0) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
        s.original_max_position_embeddings <= 0) {
      refuse(c.source,
             "rope_scaling llama3 needs factor > 0, high_freq_factor > low_freq_factor > 0 and a positive "
             "original_max_position_embeddings",
             "fix config.json");
    }
  } else if (!c.rope_scaling.type.empty()) {
    refuse(c.source, "rope_scaling type \"" + c.rope_scaling.type + "\" is not supported");
  }
}

std::string llama_config_to_json(const LlamaConfig& c) {
  json j;
  j["architectures"] = {expected_architecture(c.model_type)};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_dropout"] = 0.0;
  if (c.rope_scaling.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.model_type == "llama") {
    if (c.qkv_bias != c.o_bias) {
      refuse(c.source, "a llama config.json cannot express q/k/v bias without o_proj bias", "use model_type qwen2");
    }
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if (c.model_type == "mistral") {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  } else if (c.model_type == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    j["max_window_layers"] = 0;
  }
  if (!c.dtype.empty()) j["torch_dtype"] = c.dtype;
  return j.dump(2) + "\n";
}

std::int64_t llama_layer_parameter_count(const LlamaConfig& c) {
  const std::int64_t d = c.hidden_size;
  const std::int64_t q = c.num_heads * c.head_dim;
  const std::int64_t kv = c.num_kv_heads * c.head_dim;
  std::int64_t attn = d * q + 2 * d * kv + q * d;
  if (c.qkv_bias) attn += q + 2 * kv;
  if (c.o_bias) attn += d;
  std::int64_t mlp = 3 * d * c.intermediate_size;
  if (c.mlp_bias) mlp += 2 * c.intermediate_size + d;
  return attn + mlp + 2 * d;
}

std::int64_t llama_embedding_parameter_count(const LlamaConfig& c) { return c.vocab_size * c.hidden_size; }

std::int64_t llama_parameter_count(const LlamaConfig& c) {
  const std::int64_t embed = llama_embedding_parameter_count(c);
  return embed + c.num_layers * llama_layer_parameter_count(c) + c.hidden_size + (c.tie_word_embeddings ? 0 : embed);
}

}  // namespace ranktune
