// defines: LlamaConfig (shape and math switches of a Llama-family decoder: Llama 2/3.x, Mistral, Qwen2/2.5,
// TinyLlama), read from a Hugging Face config.json or built from ranktune's [model] section, and written back as
// config.json for export. A field that changes the math is either honoured or refused by name (ConfigError): a model
// we cannot reproduce exactly is an error, never a silent approximation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ranktune/core/config.h"

namespace ranktune {

// rope_scaling of type "llama3" (Llama 3.1+): long wavelengths divided by `factor`, short ones kept, a smooth ramp
// between original_max_position_embeddings / low_freq_factor and / high_freq_factor.
struct RopeScaling {
  std::string type;  // "" = none, "llama3"
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  std::int64_t original_max_position_embeddings = 0;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;  // HF num_hidden_layers
  std::int64_t num_heads = 0;   // HF num_attention_heads
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  RopeScaling rope_scaling;
  bool qkv_bias = false;  // q/k/v projections have a bias (Qwen2; Llama's attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama's attention_bias only)
  bool mlp_bias = false;  // gate/up/down have a bias (Llama's mlp_bias)
  bool tie_word_embeddings = false;
  std::int64_t sliding_window = 0;  // 0 = full attention; else sequences longer than this are refused
  std::string dtype;                // the stored weights' dtype as config.json names it ("bfloat16"); informational
  bool bnb_nf4 = false;             // quantization_config: decoder linears stored in bitsandbytes NF4
  std::string source;               // where it came from, for messages: a config.json path or "[model] section"
};

// Parses config.json text; `origin` names the file in messages. Throws ConfigError naming the field.
LlamaConfig llama_config_from_json(std::string_view text, const std::string& origin);
// Reads and parses a config.json file.
LlamaConfig llama_config_load(const std::string& path);
// The from-scratch model of the [model] section (model.path empty).
LlamaConfig llama_config_from_model(const ModelConfig& m);
// config.json that transformers (4.x and 5.x) reads back into the same model.
std::string llama_config_to_json(const LlamaConfig& c);
// Cross-field checks (positive sizes, heads divisible by kv heads, even head_dim). Throws ConfigError.
void llama_config_validate(const LlamaConfig& c);

// Parameter count of the model (embedding and an untied lm_head included, LoRA adapters not): the one counter that
// `ranktune plan`, the balanced planner and the MFU formula share, built from the two parts below.
std::int64_t llama_parameter_count(const LlamaConfig& c);
// One decoder layer: q/k/v/o at num_heads x head_dim and num_kv_heads x head_dim, the MLP, both norms, every bias.
std::int64_t llama_layer_parameter_count(const LlamaConfig& c);
// vocab_size x hidden_size: the token embedding, and an untied lm_head of the same size.
std::int64_t llama_embedding_parameter_count(const LlamaConfig& c);

}  // namespace ranktune
