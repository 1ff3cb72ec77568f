// Config parsing: precedence, unknown keys, malformed lines, bad values, missing file, no prefix guessing, hashing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/cli.h"
#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

class ConfigTest : public testing::Test {
 protected:
  std::string write_ini(const std::string& text) {
    const std::string path = dir_ / (std::to_string(counter_++) + ".ini");
    std::ofstream(path) << text;
    return path;
  }

  static CliRequest parse(std::vector<std::string> args) {
    std::vector<const char*> argv{"ranktune"};
    for (const auto& a : args) argv.push_back(a.c_str());
    return cli_parse(static_cast<int>(argv.size()), argv.data());
  }

  // The message of the ConfigError/UsageError thrown by f, or "" if none was thrown.
  template <class F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::usage) << e.what();
      return std::string(e.what()) + " | hint: " + e.hint();
    }
    return "";
  }

 private:
  test::ScratchDir dir_{"config_" + test::test_name()};
  int counter_ = 0;
};

TEST_F(ConfigTest, DefaultsWhenNothingGiven) {
  const auto req = parse({"train"});
  const Config cfg = config_apply(req.values);
  EXPECT_EQ(cfg.device, "auto");  // a GPU when one is visible, else the CPU (#15): a first run works on a laptop
  EXPECT_EQ(cfg.parallel.mode, "auto");
  EXPECT_EQ(cfg.train.micro_batch, Config{}.train.micro_batch);
  EXPECT_NO_THROW(config_validate(cfg));
}

TEST_F(ConfigTest, FileSectionsMapToDottedKeys) {
  const auto ini = write_ini("device = cpu  # top-level key\n[train]\nlr = 3e-4\nsteps=17\n[parallel]\nmode = ddp\n");
  const Config cfg = config_apply(parse({"train", "--config", ini}).values);
  EXPECT_EQ(cfg.device, "cpu");
  EXPECT_DOUBLE_EQ(cfg.train.lr, 3e-4);
  EXPECT_EQ(cfg.train.steps, 17);
  EXPECT_EQ(cfg.parallel.mode, "ddp");
}

TEST_F(ConfigTest, CommandLineBeatsFileBeatsDefault) {
  const auto ini = write_ini("[train]\nlr = 3e-4\nsteps = 17\n");
  const auto req = parse({"train", "--train.lr=1e-5", "--config", ini});
  const Config cfg = config_apply(req.values);
  EXPECT_DOUBLE_EQ(cfg.train.lr, 1e-5);                            // command line
  EXPECT_EQ(cfg.train.steps, 17);                                  // file
  EXPECT_EQ(cfg.train.warmup_steps, Config{}.train.warmup_steps);  // default
  EXPECT_EQ(req.values.at("train.lr").source, ConfigSource::command_line);
  EXPECT_EQ(req.values.at("train.steps").origin, ini + ":3");
}

TEST_F(ConfigTest, SpaceSeparatedValueOnCommandLine) {
  const Config cfg = config_apply(parse({"topology", "--device", "cpu", "--parallel.mode", "balanced"}).values);
  EXPECT_EQ(cfg.device, "cpu");
  EXPECT_EQ(cfg.parallel.mode, "balanced");
}

TEST_F(ConfigTest, UnknownKeyInFileNamesFileLineAndSuggests) {
  const auto ini = write_ini("[train]\nlr = 1e-3\nstepz = 5\n");
  const std::string msg = error_of([&] { parse({"train", "--config", ini}); });
  EXPECT_NE(msg.find(ini + ":3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key 'train.stepz'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'train.steps'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, UnknownSectionIsAnError) {
  const auto ini = write_ini("[trian]\nlr = 1e-3\n");
  const std::string msg = error_of([&] { parse({"train", "--config", ini}); });
  EXPECT_NE(msg.find("unknown key 'trian.lr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.lr"), std::string::npos) << msg;
}

TEST_F(ConfigTest, MalformedLineNamesFileAndLine) {
  const auto ini = write_ini("[train]\nlr 1e-3\n");
  const std::string msg = error_of([&] { parse({"train", "--config", ini}); });
  EXPECT_NE(msg.find(ini + ":2: malformed line 'lr 1e-3'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, MalformedSectionHeader) {
  const auto ini = write_ini("[train\nlr = 1\n");
  EXPECT_NE(error_of([&] {
              parse({"train", "--config", ini});
            }).find(":1: malformed section header"),
            std::string::npos);
}

TEST_F(ConfigTest, DuplicateKeyInFile) {
  const auto ini = write_ini("[train]\nlr = 1\nlr = 2\n");
  EXPECT_NE(error_of([&] {
              parse({"train", "--config", ini});
            }).find("set twice (first at line 2)"),
            std::string::npos);
}

TEST_F(ConfigTest, MissingFileIsNamed) {
  const std::string msg = error_of([&] { parse({"train", "--config", "/nonexistent/x.ini"}); });
  EXPECT_NE(msg.find("'/nonexistent/x.ini' cannot be opened"), std::string::npos) << msg;
}

TEST_F(ConfigTest, PrefixGuessingIsOff) {
  // Boost would take --train.ste as --train.steps (and --dev as --device) if guessing were on.
  const std::string msg = error_of([&] { parse({"train", "--train.ste", "3"}); });
  EXPECT_NE(msg.find("unknown option"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { parse({"train", "--dev", "cpu"}); }).find("unknown option"), std::string::npos);
}

TEST_F(ConfigTest, UnknownOptionSuggestsNearest) {
  const std::string msg = error_of([&] { parse({"train", "--train.lrr=1"}); });
  EXPECT_NE(msg.find("did you mean '--train.lr'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, BadNumberNamesKeyValueAndOrigin) {
  const auto req = parse({"train", "--train.lr=fast"});
  const std::string msg = error_of([&] { config_apply(req.values); });
  EXPECT_NE(msg.find("command line --train.lr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad value 'fast' for train.lr: expected a number"), std::string::npos) << msg;
}

TEST_F(ConfigTest, BadValueInFileNamesLine) {
  const auto ini = write_ini("\n[train]\nsteps = 1.5\n");
  const auto req = parse({"train", "--config", ini});
  const std::string msg = error_of([&] { config_apply(req.values); });
  EXPECT_NE(msg.find(ini + ":3: bad value '1.5' for train.steps: expected an integer"), std::string::npos) << msg;
}

TEST_F(ConfigTest, ChoicesAreEnforced) {
  const auto req = parse({"train", "--parallel.mode=sharded"});
  const std::string msg = error_of([&] { config_apply(req.values); });
  EXPECT_NE(msg.find("expected one of auto, single, ddp, balanced"), std::string::npos) << msg;
}

TEST_F(ConfigTest, BooleansAcceptCommonSpellings) {
  EXPECT_FALSE(config_apply(parse({"train", "--model.tie_embeddings=off"}).values).model.tie_embeddings);
  EXPECT_TRUE(config_apply(parse({"train", "--model.tie_embeddings=True"}).values).model.tie_embeddings);
  EXPECT_FALSE(error_of([&] { config_apply(parse({"train", "--model.tie_embeddings=maybe"}).values); }).empty());
}

TEST_F(ConfigTest, UnknownSubcommandAndStrayArgument) {
  EXPECT_NE(error_of([&] { parse({"trian"}); }).find("unknown subcommand 'trian'"), std::string::npos);
  EXPECT_NE(error_of([&] { parse({"train", "extra"}); }).find("unexpected argument 'extra'"), std::string::npos);
}

TEST_F(ConfigTest, ValidationExplainsCrossFieldErrors) {
  Config cfg;
  cfg.model.num_heads = 6;  // 256 % 6 != 0
  EXPECT_THROW(config_validate(cfg), ConfigError);
  cfg = Config{};
  cfg.train.micro_batch = 0;
  EXPECT_THROW(config_validate(cfg), ConfigError);
  cfg = Config{};
  cfg.train.mlp_chunk_tokens = -1;
  EXPECT_NE(error_of([&] { config_validate(cfg); }).find("train.mlp_chunk_tokens must be >= 0"), std::string::npos);
}

TEST_F(ConfigTest, ActivationOffloadNeedsActivationCheckpointing) {
  Config cfg = config_apply(parse({"train", "--train.activation_offload=true"}).values);
  EXPECT_TRUE(cfg.train.activation_offload);
  const std::string msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.activation_offload"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint: add --train.activation_checkpointing=true"), std::string::npos) << msg;
  cfg.train.activation_checkpointing = true;
  EXPECT_NO_THROW(config_validate_train(cfg));
  EXPECT_FALSE(Config{}.train.activation_offload);
}

TEST_F(ConfigTest, ActivationCheckpointingLayers) {
  Config cfg = config_apply(parse({"train", "--train.activation_checkpointing_layers=3"}).values);
  EXPECT_EQ(cfg.train.activation_checkpointing_layers, 3);
  std::string msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.activation_checkpointing_layers=3 needs train.activation_checkpointing=true"),
            std::string::npos)
      << msg;
  cfg.train.activation_checkpointing = true;
  EXPECT_NO_THROW(config_validate_train(cfg));
  EXPECT_NO_THROW(config_validate_for_layers(cfg, 3));
  msg = error_of([&] { config_validate_for_layers(cfg, 2); });
  EXPECT_NE(msg.find("train.activation_checkpointing_layers=3 is more than the model's 2 layers"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("hint: use at most 2, or 0 for every layer"), std::string::npos) << msg;
  cfg.train.activation_checkpointing_layers = -1;
  msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.activation_checkpointing_layers must be >= 0"), std::string::npos) << msg;
  EXPECT_EQ(Config{}.train.activation_checkpointing_layers, 0);
}

TEST_F(ConfigTest, Fp8MatmulsNeedLoraOverASixteenBitBaseAndTheFastPath) {
  Config cfg = config_apply(parse({"train", "--train.fp8_matmuls=true"}).values);
  EXPECT_TRUE(cfg.train.fp8_matmuls);
  std::string msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.fp8_matmuls=true needs LoRA"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint: add --lora.r=16, or drop --train.fp8_matmuls"), std::string::npos) << msg;
  cfg.lora.r = 16;
  EXPECT_NO_THROW(config_validate_train(cfg));
  cfg.model.quantize = "nf4";
  msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.fp8_matmuls=true with model.quantize=nf4"), std::string::npos) << msg;
  cfg.model.quantize = "none";
  cfg.train.kernels = "eager";
  msg = error_of([&] { config_validate_train(cfg); });
  EXPECT_NE(msg.find("train.fp8_matmuls=true with train.kernels=eager"), std::string::npos) << msg;
  EXPECT_FALSE(Config{}.train.fp8_matmuls);
}

// The rule the model and the planner share: `count` of `layers` spread evenly; 0 or all of them: every layer.
TEST(ActivationCheckpointedLayers, SpreadEvenlyOverTheModel) {
  auto pattern = [](std::int64_t layers, std::int64_t count) {
    std::string p;
    for (std::int64_t i = 0; i < layers; ++i) p += activation_checkpointed_layer(i, layers, count) ? 'R' : '.';
    return p;
  };
  EXPECT_EQ(pattern(8, 0), "RRRRRRRR");
  EXPECT_EQ(pattern(8, 8), "RRRRRRRR");
  EXPECT_EQ(pattern(8, 9), "RRRRRRRR");
  EXPECT_EQ(pattern(8, 4), ".R.R.R.R");
  EXPECT_EQ(pattern(8, 2), "...R...R");
  EXPECT_EQ(pattern(8, 1), ".......R");
  EXPECT_EQ(pattern(8, 6), ".RRR.RRR");
  EXPECT_EQ(pattern(5, 2), "..R.R");
  for (std::int64_t layers : {1, 4, 22, 32, 80})
    for (std::int64_t count = 0; count <= layers + 1; ++count) {
      const std::string p = pattern(layers, count);
      const std::int64_t want = activation_checkpointed_count(layers, count);
      EXPECT_EQ(static_cast<std::int64_t>(std::count(p.begin(), p.end(), 'R')), want) << layers << " " << count;
      EXPECT_EQ(want, count <= 0 || count > layers ? layers : count);
      // Evenly: any window of w layers holds within one of w * count / layers recomputing ones.
      for (std::int64_t w = 1; w <= layers && count > 0 && count < layers; ++w)
        for (std::int64_t a = 0; a + w <= layers; ++a) {
          const auto in = std::count(p.begin() + a, p.begin() + a + w, 'R');
          EXPECT_LE(std::abs(static_cast<double>(in) - static_cast<double>(w * count) / static_cast<double>(layers)),
                    1.0)
              << p << " window " << a << "+" << w;
        }
    }
}

TEST_F(ConfigTest, HashDependsOnEffectiveValuesOnly) {
  const auto ini = write_ini("[train]\nlr = 0.001\n");
  const Config from_file = config_apply(parse({"train", "--config", ini}).values);
  const Config from_cli = config_apply(parse({"train", "--train.lr=1e-3"}).values);
  EXPECT_EQ(config_hash(from_file), config_hash(from_cli));
  Config other = from_cli;
  other.train.steps += 1;
  EXPECT_NE(config_hash(other), config_hash(from_cli));
}

TEST_F(ConfigTest, CheckpointDirFollowsOutputDirUnlessSet) {
  EXPECT_EQ(config_apply(parse({"train", "--output_dir=x/run"}).values).checkpoint.dir, "x/run/checkpoints");
  EXPECT_EQ(config_apply(parse({"train", "--output_dir=x/run", "--checkpoint.dir=ck"}).values).checkpoint.dir, "ck");
  const auto ini = write_ini("output_dir = a\n[checkpoint]\ndir = b\n");
  EXPECT_EQ(config_apply(parse({"train", "--config", ini, "--output_dir=c"}).values).checkpoint.dir, "b");
  Config cfg;
  EXPECT_EQ(config_tokenizer(cfg), "byte");  // auto without a model directory
  cfg.model.path = "m";
  EXPECT_EQ(config_tokenizer(cfg), "m/tokenizer.json");
  cfg.data.tokenizer = "byte";
  EXPECT_EQ(config_tokenizer(cfg), "byte");
}

TEST_F(ConfigTest, TableShowsSources) {
  const auto req = parse({"train", "--train.lr=1e-5"});
  const std::string table = config_table(config_apply(req.values), req.values);
  EXPECT_NE(table.find("command line --train.lr"), std::string::npos);
  EXPECT_NE(table.find("default"), std::string::npos);
}

TEST_F(ConfigTest, EveryShippedConfigParsesAndValidates) {
  const std::filesystem::path dir = RANKTUNE_SOURCE_DIR "/configs";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".ini") continue;
    ++seen;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(config_validate(config_apply(cli_read_ini(entry.path().string()))));
  }
  EXPECT_GT(seen, 0);
}

}  // namespace
}  // namespace ranktune
