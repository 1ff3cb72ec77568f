// LlamaConfig: real config.json files of the supported families parse to the right shape (and parameter counts that
// match the published model sizes), transformers 5 files parse, and math-changing fields are refused by name.
#include <gtest/gtest.h>

#include <string>

#include "model/model_test_util.h"
#include "ranktune/core/cli.h"
#include "ranktune/core/error.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {
namespace {

// Llama 3.1 8B as published (transformers 4.x layout: rope_theta + rope_scaling).
const char* const kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
  "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

const char* const kTinyLlama = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 22, "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.31.0.dev0",
  "use_cache": true, "vocab_size": 32000})";

const char* const kQwen25_05B = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
  "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
  "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

const char* const kMistral7B_v01 = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})";

// Replaces `from` (which must occur) by `to` in the JSON text.
std::string edit(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return text.replace(pos, from.size(), to);
}

void expect_refused(const std::string& text, const std::string& needle) {
  try {
    llama_config_from_json(text, "test/config.json");
    ADD_FAILURE() << "accepted a config that should be refused for: " << needle;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test/config.json"), std::string::npos) << e.what();
  }
}

TEST(LlamaConfig, Llama31From4xLayout) {
  const LlamaConfig c = llama_config_from_json(kLlama31_8B, "llama31.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(llama_parameter_count(c), 8030261248LL);  // the published size
}

TEST(LlamaConfig, TinyLlama) {
  const LlamaConfig c = llama_config_from_json(kTinyLlama, "tinyllama.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);  // absent: the default
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(llama_parameter_count(c), 1100048384LL);
}

TEST(LlamaConfig, Qwen25HasQkvBiasAndTiedEmbeddings) {
  const LlamaConfig c = llama_config_from_json(kQwen25_05B, "qwen.json");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
  EXPECT_EQ(llama_parameter_count(c), 494032768LL);
}

TEST(LlamaConfig, Qwen2SlidingWindowOnlyWhenUsed) {
  const std::string on = edit(kQwen25_05B, "\"use_sliding_window\": false", "\"use_sliding_window\": true");
  EXPECT_EQ(llama_config_from_json(on, "q").sliding_window, 0);  // max_window_layers 24 = all layers full
  const std::string some = edit(on, "\"max_window_layers\": 24", "\"max_window_layers\": 12");
  EXPECT_EQ(llama_config_from_json(some, "q").sliding_window, 32768);
}

TEST(LlamaConfig, MistralKeepsItsSlidingWindow) {
  const LlamaConfig c = llama_config_from_json(kMistral7B_v01, "mistral.json");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(llama_parameter_count(c), 7241732096LL);
  const std::string none = edit(kMistral7B_v01, "\"sliding_window\": 4096", "\"sliding_window\": null");
  EXPECT_EQ(llama_config_from_json(none, "m").sliding_window, 0);
}

TEST(LlamaConfig, Transformers5FixturesParse) {
  const LlamaConfig rope = llama_config_load(test::fixture("llama3_rope/config.json"));
  EXPECT_EQ(rope.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(rope.rope_theta, 500000.0);
  EXPECT_EQ(rope.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(rope.head_dim, 16);
  const LlamaConfig qwen = llama_config_load(test::fixture("qwen2_bias/config.json"));
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_DOUBLE_EQ(qwen.rope_theta, 1000000.0);
  const LlamaConfig mistral = llama_config_load(test::fixture("mistral_head_dim/config.json"));
  EXPECT_EQ(mistral.head_dim, 24);
  EXPECT_EQ(mistral.hidden_size, 64);
  EXPECT_TRUE(llama_config_load(test::fixture("llama_tied/config.json")).tie_word_embeddings);
}

TEST(LlamaConfig, RefusesWhatChangesTheMath) {
  expect_refused(edit(kLlama31_8B, "\"model_type\": \"llama\"", "\"model_type\": \"gemma\""), "gemma");
  expect_refused(edit(kLlama31_8B, "\"LlamaForCausalLM\"", "\"LlamaForSequenceClassification\""),
                 "LlamaForSequenceClassification");
  expect_refused(edit(kLlama31_8B, "\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\""), "yarn");
  expect_refused(edit(kTinyLlama, "\"rope_scaling\": null", R"("rope_scaling": {"type": "linear", "factor": 2.0})"),
                 "linear");
  expect_refused(edit(kLlama31_8B, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), "gelu");
  expect_refused(edit(kLlama31_8B, "\"attention_dropout\": 0.0", "\"attention_dropout\": 0.1"), "attention_dropout");
  expect_refused(edit(kLlama31_8B, "\"use_cache\": true", R"("quantization_config": {"quant_method": "gptq"})"),
                 "quantization_config");
  expect_refused(edit(kLlama31_8B, "\"pretraining_tp\": 1", "\"partial_rotary_factor\": 0.5"), "partial_rotary_factor");
  expect_refused(edit(kQwen25_05B, "\"use_cache\": true", R"("layer_types": ["full_attention", "chunked"])"),
                 "chunked");
}

TEST(LlamaConfig, RefusesBrokenFiles) {
  expect_refused("{\"model_type\": \"llama\",", "not valid JSON");
  expect_refused(edit(kLlama31_8B, "\"hidden_size\": 4096,", ""), "hidden_size");
  expect_refused(edit(kLlama31_8B, "\"hidden_size\": 4096", "\"hidden_size\": \"4096\""), "hidden_size");
  expect_refused(edit(kLlama31_8B, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5"), "num_key_value_heads");
  expect_refused(edit(kLlama31_8B, "\"vocab_size\": 128256", "\"vocab_size\": 0"), "vocab_size");
}

TEST(LlamaConfig, FromTinyIni) {
  const Config cfg = config_apply(cli_read_ini(std::string(RANKTUNE_SOURCE_DIR) + "/configs/tiny.ini"));
  const LlamaConfig c = llama_config_from_model(cfg.model);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_EQ(c.source, "[model] section");
}

TEST(LlamaConfig, JsonRoundTrip) {
  for (const char* text : {kLlama31_8B, kTinyLlama, kQwen25_05B, kMistral7B_v01}) {
    const LlamaConfig a = llama_config_from_json(text, "a");
    const LlamaConfig b = llama_config_from_json(llama_config_to_json(a), "b");
    EXPECT_EQ(a.model_type, b.model_type);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
    EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(a.qkv_bias, b.qkv_bias);
    EXPECT_EQ(a.o_bias, b.o_bias);
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(a.sliding_window, b.sliding_window);
    EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
    EXPECT_EQ(llama_parameter_count(a), llama_parameter_count(b));
  }
}

}  // namespace
}  // namespace ranktune
