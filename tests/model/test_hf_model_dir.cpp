// A model directory's config.json is checked against its safetensors headers before anything is allocated from it:
// model directories written by transformers (tests/reference/fixtures) with one config.json field corrupted each give
// the exact one-line ModelDirError naming the field, its value, the file and the tensor; an absurd vocab_size or layer
// count is refused without an allocation. Models saved by llama_save_pretrained in every variant (tied, untied, with
// biases, qwen2, mistral) pass the check, so its table of tensors is the model's own.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/model/hf_model_dir.h"
#include "support/scratch_dir.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

// A copy of a fixture model directory whose config.json the test edits.
class CorruptedConfig : public ::testing::Test {
 protected:
  void use(const std::string& fixture) {
    for (const auto& f : fs::directory_iterator(test::fixture(fixture)))
      if (f.path().filename() != "reference.safetensors") fs::copy_file(f.path(), dir.path() / f.path().filename());
  }
  void set(const std::string& field, const nlohmann::json& value) {
    std::ifstream in(dir / "config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j[field] = value;
    std::ofstream(dir / "config.json", std::ios::trunc) << j.dump(2);
  }
  // The message of the ModelDirError that both the shape check and the full load give.
  std::string error() {
    std::string first;
    try {
      hf_model_config(dir.str());
      ADD_FAILURE() << "hf_model_config accepted the corrupted config.json";
    } catch (const ModelDirError& e) {
      first = e.what();
      EXPECT_NE(e.hint().find("config.json"), std::string::npos) << e.hint();
    }
    try {
      llama_from_pretrained(dir.str());
      ADD_FAILURE() << "llama_from_pretrained accepted the corrupted config.json";
    } catch (const ModelDirError& e) {  // an allocation from the config first would throw c10::Error instead
      EXPECT_EQ(e.what(), first);
    }
    return first;
  }
  std::string config() const { return dir / "config.json"; }
  std::string weights() const { return dir / "model.safetensors"; }

  test::ScratchDir dir{"hf_model_dir_" + test::test_name()};
};

TEST_F(CorruptedConfig, AbsurdVocabularyRefusedBeforeAllocation) {
  use("llama_gqa_untied");
  set("vocab_size", 1000000000000LL);
  EXPECT_EQ(error(), "vocab_size = 1000000000000 in " + config() + " does not match " + weights() +
                         ": model.embed_tokens.weight is [96, 64], not [1000000000000, 64]");
}

TEST_F(CorruptedConfig, HiddenSize) {
  use("llama_gqa_untied");
  set("hidden_size", 128);
  EXPECT_EQ(error(), "hidden_size = 128 in " + config() + " does not match " + weights() +
                         ": model.embed_tokens.weight is [96, 64], not [96, 128]");
}

TEST_F(CorruptedConfig, IntermediateSize) {
  use("llama_gqa_untied");
  set("intermediate_size", 256);
  EXPECT_EQ(error(), "intermediate_size = 256 in " + config() + " does not match " + weights() +
                         ": model.layers.0.mlp.gate_proj.weight is [128, 64], not [256, 64]");
}

TEST_F(CorruptedConfig, AttentionHeadsAndHeadDim) {
  use("llama_gqa_untied");
  set("num_attention_heads", 8);
  EXPECT_EQ(error(), "num_attention_heads x head_dim = 8 x 16 = 128 in " + config() + " does not match " + weights() +
                         ": model.layers.0.self_attn.q_proj.weight is [64, 64], not [128, 64]");
  set("num_attention_heads", 4);
  set("num_key_value_heads", 4);
  EXPECT_EQ(error(), "num_key_value_heads x head_dim = 4 x 16 = 64 in " + config() + " does not match " + weights() +
                         ": model.layers.0.self_attn.k_proj.weight is [32, 64], not [64, 64]");
  set("num_key_value_heads", 2);
  set("head_dim", 32);
  EXPECT_EQ(error(), "num_attention_heads x head_dim = 4 x 32 = 128 in " + config() + " does not match " + weights() +
                         ": model.layers.0.self_attn.q_proj.weight is [64, 64], not [128, 64]");
  // Heads whose product overflows int64 match no tensor; the message shows the factors.
  set("num_attention_heads", 4611686018427387904LL);
  set("num_key_value_heads", 2);
  EXPECT_EQ(error(), "num_attention_heads x head_dim = 4611686018427387904 x 32 in " + config() + " does not match " +
                         weights() + ": model.layers.0.self_attn.q_proj.weight is [64, 64], not [?, 64]");
}

TEST_F(CorruptedConfig, LayerCount) {
  use("llama_gqa_untied");
  set("num_hidden_layers", 3);
  EXPECT_EQ(error(), "num_hidden_layers = 3 in " + config() + " does not match " + weights() +
                         ": its last layer is model.layers.1 (2 layers)");
  set("num_hidden_layers", 1000000000000LL);  // no table of that many layers is built
  EXPECT_EQ(error(), "num_hidden_layers = 1000000000000 in " + config() + " does not match " + weights() +
                         ": its last layer is model.layers.1 (2 layers)");
}

TEST_F(CorruptedConfig, ShardedModelNamesItsIndex) {
  use("llama3_rope");
  set("num_hidden_layers", 1);
  EXPECT_EQ(error(), "num_hidden_layers = 1 in " + config() + " does not match " +
                         (dir / "model.safetensors.index.json") + ": its last layer is model.layers.1 (2 layers)");
  set("num_hidden_layers", 2);
  set("vocab_size", 95);
  EXPECT_EQ(error(), "vocab_size = 95 in " + config() + " does not match " +
                         (dir / "model-00001-of-00004.safetensors") +
                         ": model.embed_tokens.weight is [96, 64], not [95, 64]");
}

TEST_F(CorruptedConfig, OptionalTensorsNameTheSettingThatAsksForThem) {
  use("llama_tied");
  set("tie_word_embeddings", false);
  EXPECT_EQ(error(), "model directory " + dir.str() + " does not match its config (" + config() +
                         "): missing lm_head.weight (for tie_word_embeddings = false)");
  set("tie_word_embeddings", true);
  set("attention_bias", true);
  EXPECT_EQ(error(), "model directory " + dir.str() + " does not match its config (" + config() +
                         "): missing model.layers.0.self_attn.q_proj.bias, model.layers.0.self_attn.k_proj.bias, "
                         "model.layers.0.self_attn.v_proj.bias, model.layers.0.self_attn.o_proj.bias, "
                         "model.layers.1.self_attn.q_proj.bias, model.layers.1.self_attn.k_proj.bias, "
                         "model.layers.1.self_attn.v_proj.bias, model.layers.1.self_attn.o_proj.bias "
                         "(for attention_bias = true)");
}

TEST_F(CorruptedConfig, UntouchedFixturesPass) {
  use("qwen2_bias");
  EXPECT_EQ(hf_model_config(dir.str()).vocab_size, 96);
  EXPECT_NO_THROW(llama_from_pretrained(dir.str()));
}

// Every variant of the model, written by llama_save_pretrained, passes: the check's table has the model's names and
// shapes (a difference would be a missing/unexpected tensor, or a LibraryError from llama_load_weights).
TEST(HfModelDirCheck, TableMatchesTheModelInEveryVariant) {
  test::ScratchDir dir("hf_model_dir_variants");
  std::vector<LlamaConfig> variants(4, test::tiny_llama());
  variants[0].tie_word_embeddings = true;
  variants[1].qkv_bias = variants[1].o_bias = variants[1].mlp_bias = true;
  variants[2].model_type = "qwen2";
  variants[2].qkv_bias = true;
  variants[3].model_type = "mistral";
  variants[3].head_dim = 12;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const std::string out = dir / std::to_string(i);
    Llama m = llama_random(variants[i], 3);
    llama_save_pretrained(*m, out, at::kFloat);
    EXPECT_NO_THROW(hf_model_config(out)) << i;
    Llama back = llama_from_pretrained(out);
    EXPECT_EQ(back->named_parameters().size(), m->named_parameters().size()) << i;
  }
}

}  // namespace
}  // namespace ranktune
