// The resume rule (config_changes): the INI record a checkpoint keeps reads back to every key; a changed learning rate,
// step count, seed or sequence length is shown; another LoRA rank, scale or targets, a random-init model's shape or
// another tokenizer or another base quantization is refused with its reason; keys that do not shape training are left
// out; keys an older build did not record are shown as such, refused only for a quantized base.
#include <gtest/gtest.h>

#include <string>

#include "ranktune/core/config.h"
#include "ranktune/core/config_changes.h"

namespace ranktune {
namespace {

// The changes of `now` against what a checkpoint of `then` recorded.
std::vector<ConfigChange> changes(const Config& then, const Config& now) {
  return config_changes(config_ini_read(config_ini(then)), now);
}

// "key saved -> now" of each change, and "refused" where the rule refuses it.
std::vector<std::string> summary(const Config& then, const Config& now) {
  std::vector<std::string> out;
  for (const ConfigChange& c : changes(then, now))
    out.push_back(c.key + " " + c.saved + " -> " + c.now + (c.refuse.empty() ? "" : " refused"));
  return out;
}

using Lines = std::vector<std::string>;

TEST(ConfigChanges, RecordReadsBackToEveryKey) {
  Config cfg;
  cfg.train.lr = 3e-4;
  cfg.parallel.max_memory = "";
  cfg.data.path = "a.jsonl,b = c.jsonl";      // '=' inside a value
  cfg.generate.prompt = "Hi\n[lora]\nr = 8";  // a newline cannot override an earlier section's key
  const ConfigText read = config_ini_read(config_ini(cfg));
  for (const ConfigKey& k : config_schema()) {
    if (k.name.rfind("generate.", 0) == 0) continue;  // after the prompt's "[lora]" line they read as lora.*
    ASSERT_TRUE(read.count(k.name)) << k.name;
    EXPECT_EQ(read.at(k.name), k.show(cfg)) << k.name;
  }
  EXPECT_EQ(read.at("lora.r"), "0");
  EXPECT_TRUE(config_changes(read, cfg).empty());
}

TEST(ConfigChanges, LegitimateChangesAreShown) {
  Config then;
  then.device = "cuda";
  Config now = then;
  now.train.lr = 5e-4;
  now.train.steps = 400;
  now.seed = 7;
  now.train.seq_len = 256;  // no tensor depends on it: the data rows are packed anew
  now.device = "cpu";
  now.lora.dropout = 0.1;
  EXPECT_EQ(summary(then, now),
            (Lines{"device cuda -> cpu", "seed 1234 -> 7", "lora.dropout 0 -> 0.1", "train.steps 200 -> 400",
                   "train.seq_len 128 -> 256", "train.lr 0.001 -> 0.0005"}));
  EXPECT_EQ(config_changes_describe(changes(then, now)),
            "device cuda -> cpu, seed 1234 -> 7, lora.dropout 0 -> 0.1, train.steps 200 -> 400, "
            "train.seq_len 128 -> 256, train.lr 0.001 -> 0.0005");
}

TEST(ConfigChanges, InvocationKeysAreLeftOut) {
  Config then;
  Config now = then;
  now.resume = "auto";
  now.generate.max_new_tokens = 9;
  now.export_.dtype = "fp32";
  now.prepare.output = "x.h5";
  EXPECT_TRUE(changes(then, now).empty());
  now.output_dir = "";
  EXPECT_EQ(config_changes_describe(changes(then, now)), "output_dir runs/default -> \"\"");
}

TEST(ConfigChanges, LoraSettingsOfTheAdaptersAreRefused) {
  Config then;
  then.lora.r = 4;
  Config now = then;
  now.lora.r = 8;
  now.lora.alpha = 32;
  now.lora.target_modules = "q,v";
  EXPECT_EQ(summary(then, now), (Lines{"lora.r 4 -> 8 refused", "lora.alpha 16 -> 32 refused",
                                       "lora.target_modules q,k,v,o,gate,up,down -> q,v refused"}));
  const ConfigChange r = changes(then, now).front();
  EXPECT_EQ(r.refuse, "the saved trainable tensors follow it: adapters of that rank, or the whole model for 0");
  // A full fine-tune resumed with LoRA, and the reverse.
  now = then;
  now.lora.r = 0;
  EXPECT_EQ(summary(then, now), (Lines{"lora.r 4 -> 0 refused"}));
  EXPECT_EQ(summary(now, then), (Lines{"lora.r 0 -> 4 refused"}));
  // Without LoRA on either side, its other keys are inert.
  then.lora.r = 0;
  now.lora.alpha = 8;
  EXPECT_EQ(summary(then, now), (Lines{"lora.alpha 16 -> 8"}));
}

TEST(ConfigChanges, RandomInitShapeIsRefusedAPretrainedOneIsNot) {
  Config then;
  Config now = then;
  now.model.hidden_size = 512;
  now.model.tie_embeddings = false;
  now.model.rope_theta = 500000;
  now.model.max_seq_len = 1024;  // no tensor depends on it
  EXPECT_EQ(summary(then, now),
            (Lines{"model.hidden_size 256 -> 512 refused", "model.max_seq_len 256 -> 1024",
                   "model.rope_theta 10000 -> 500000 refused", "model.tie_embeddings true -> false refused"}));
  // With model.path set, config.json defines the model and the [model] shape keys are unused.
  then.model.path = now.model.path = "/m/base";
  EXPECT_EQ(summary(then, now), (Lines{"model.hidden_size 256 -> 512", "model.max_seq_len 256 -> 1024",
                                       "model.rope_theta 10000 -> 500000", "model.tie_embeddings true -> false"}));
  // model.path itself is shown: its identity is the base check's (exit 5 for a LoRA run on another base).
  now = then;
  now.model.path = "/scratch/base";
  EXPECT_EQ(summary(then, now), (Lines{"model.path /m/base -> /scratch/base"}));
}

// Adapters trained on a 16-bit base do not fit its NF4 rounding, nor the reverse; a checkpoint of a build before
// model.quantize existed had a 16-bit base.
TEST(ConfigChanges, BaseQuantizationIsRefusedBothWays) {
  Config then;
  then.lora.r = 16;
  Config now = then;
  now.model.quantize = "nf4";
  EXPECT_EQ(summary(then, now), (Lines{"model.quantize none -> nf4 refused"}));
  EXPECT_EQ(summary(now, then), (Lines{"model.quantize nf4 -> none refused"}));
  EXPECT_NE(changes(then, now).front().refuse.find("NF4"), std::string::npos);
  EXPECT_TRUE(changes(now, now).empty());
  ConfigText older = config_ini_read(config_ini(then));
  older.erase("model.quantize");
  const std::vector<ConfigChange> got = config_changes(older, now);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].saved, "(not recorded)");
  EXPECT_FALSE(got[0].refuse.empty());
  EXPECT_TRUE(config_changes(older, then).front().refuse.empty());  // none over an older record: only shown
}

TEST(ConfigChanges, TokenizerIsRefused) {
  Config then;
  then.data.tokenizer = "byte";
  Config now = then;
  now.data.tokenizer = "/m/tokenizer.json";
  EXPECT_EQ(summary(then, now), (Lines{"data.tokenizer byte -> /m/tokenizer.json refused"}));
  EXPECT_EQ(changes(then, now).front().refuse, "the saved embeddings index that tokenizer's vocabulary");
  // `auto` is compared as what it resolves to: byte without a model directory, else the directory's tokenizer.json.
  now.data.tokenizer = "auto";
  EXPECT_EQ(summary(then, now), (Lines{"data.tokenizer byte -> auto"}));
  then.model.path = now.model.path = "/m";
  then.data.tokenizer = "/m/tokenizer.json";
  EXPECT_EQ(summary(then, now), (Lines{"data.tokenizer /m/tokenizer.json -> auto"}));
  then.data.tokenizer = "byte";
  EXPECT_EQ(summary(then, now), (Lines{"data.tokenizer byte -> auto refused"}));
}

TEST(ConfigChanges, KeysOfOtherBuilds) {
  Config now;
  ConfigText saved = config_ini_read(config_ini(now));
  saved.erase("train.epochs");       // a key added after the checkpoint was written
  saved.erase("model.hidden_size");  // never refused when not recorded
  saved["train.retired_key"] = "1";  // a key this build no longer has
  now.model.hidden_size = 64;
  const std::vector<ConfigChange> got = config_changes(saved, now);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].key, "model.hidden_size");
  EXPECT_EQ(got[0].saved, "(not recorded)");
  EXPECT_TRUE(got[0].refuse.empty());
  EXPECT_EQ(got[1].key, "train.epochs");
  // Whitespace and a CRLF file read as the writer meant them.
  const ConfigText crlf = config_ini_read("seed = 5\r\n\r\n[train]\r\n  lr=0.1  \r\n");
  EXPECT_EQ(crlf, (ConfigText{{"seed", "5"}, {"train.lr", "0.1"}}));
}

}  // namespace
}  // namespace ranktune
