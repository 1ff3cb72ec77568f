// Trainer on CPU ranks (single at 1 rank, DDP over the MPI communicator at 2), a small Llama on the generated tiny
// corpus: a few steps lower the loss and commit the final checkpoint; a run saved at step N and resumed by a fresh
// Trainer (over a model initialised from another seed) holds bit-identical parameters after the load and continues
// with the losses and weights of the uninterrupted run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/distributed/mpi_communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/train/token_data.h"
#include "ranktune/train/train_checkpoint.h"
#include "ranktune/train/trainer.h"
#include "support/shared_scratch_dir.h"

namespace ranktune {
namespace {

using Weights = std::map<std::string, at::Tensor>;

Weights weights_of(const Llama& model) {
  Weights out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

class TrainerTest : public testing::Test {
 protected:
  void SetUp() override { data = token_data_load(config("unused", kSteps)); }

  // A model small enough for a few CPU steps in a second; `steps` global steps of 2 x 4 sequences of 32 tokens per
  // rank at a constant, high learning rate, so that the loss falls visibly in a handful of steps.
  Config config(const std::string& run, long steps) const {
    Config cfg;
    cfg.device = "cpu";
    cfg.seed = 11;
    cfg.output_dir = run + "/out";
    cfg.model.hidden_size = 32;
    cfg.model.num_layers = 2;
    cfg.model.num_heads = 4;
    cfg.model.num_kv_heads = 2;
    cfg.model.intermediate_size = 64;
    cfg.model.max_seq_len = 64;
    cfg.train.steps = steps;
    cfg.train.micro_batch = 4;
    cfg.train.grad_accum = 2;
    cfg.train.seq_len = 32;
    cfg.train.lr = 1e-2;
    cfg.train.warmup_steps = 0;
    cfg.train.schedule = "constant";
    cfg.train.eval_every = 0;
    cfg.train.log_every = 1000;
    cfg.data.val_fraction = 0.01;
    cfg.checkpoint.dir = run + "/ckpt";
    cfg.checkpoint.keep = 2;
    config_validate(cfg);
    return cfg;
  }

  // As cmd_train builds it: random weights from `init_seed`, the run's generator seeded per rank.
  Llama model(const Config& cfg, std::uint64_t init_seed) const {
    const at::Device cpu(at::kCPU);
    Llama m = llama_random(llama_config_from_model(cfg.model), init_seed,
                           at::TensorOptions(cpu).dtype(llama_dtype(cpu, cfg.train.precision)));
    at::manual_seed(static_cast<std::uint64_t>(cfg.seed) + static_cast<std::uint64_t>(env.rank()));
    return m;
  }

  TrainResult train(const Config& cfg, const Llama& m) {
    Trainer trainer(cfg, env, comm, mode, m, data, run_base_identity(cfg, *m));
    return trainer.run();
  }

  static constexpr long kSteps = 12;
  MpiEnv env{nullptr, nullptr};
  MpiCommunicator comm{env};
  ParallelMode mode = env.size() > 1 ? ParallelMode::ddp : ParallelMode::single;
  TokenData data;
};

TEST_F(TrainerTest, LossFallsAndTheEndIsSaved) {
  test::SharedScratchDir dir(env, "trainer_loss");
  const Config cfg = config(dir / "run", kSteps);
  const TrainResult r = train(cfg, model(cfg, 1));
  EXPECT_EQ(r.first_step, 1);
  EXPECT_EQ(r.steps, kSteps);
  ASSERT_EQ(r.losses.size(), static_cast<std::size_t>(kSteps));
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l)) << l;
  // From about ln(259) = 5.56 (uniform over the byte vocabulary) towards the byte statistics of the text.
  EXPECT_GT(r.losses.front(), 5.0);
  EXPECT_LT(r.losses.back(), 0.9 * r.losses.front());
  EXPECT_GT(r.final_eval_loss, 0);  // evaluated at the last step on the held-out rows
  EXPECT_LT(r.final_eval_loss, r.losses.front());
  EXPECT_FALSE(r.stopped);
  EXPECT_TRUE(std::filesystem::exists(cfg.checkpoint.dir + "/latest"));
}

TEST_F(TrainerTest, ResumeContinuesTheUninterruptedRun) {
  test::SharedScratchDir dir(env, "trainer_resume");
  constexpr long kStop = 4;
  const Config whole = config(dir / "whole", kSteps);
  const Llama uninterrupted = model(whole, 1);
  const TrainResult all = train(whole, uninterrupted);
  ASSERT_EQ(all.losses.size(), static_cast<std::size_t>(kSteps));

  const Config first = config(dir / "cut", kStop);  // saves at its end, step kStop
  const Llama cut = model(first, 1);
  const TrainResult head = train(first, cut);
  for (long i = 0; i < kStop; ++i) EXPECT_EQ(head.losses[i], all.losses[i]) << "step " << i + 1;
  const Weights saved = weights_of(cut);

  Config rest = config(dir / "cut", kSteps);
  rest.resume = "auto";
  const Llama resumed = model(rest, 99);  // other initial weights: the checkpoint must replace every one
  Trainer trainer(rest, env, comm, mode, resumed, data, run_base_identity(rest, *resumed));
  const Weights loaded = weights_of(resumed);
  ASSERT_EQ(loaded.size(), saved.size());
  for (const auto& [name, w] : saved) EXPECT_TRUE(at::equal(loaded.at(name), w)) << name << " differs after load";

  const TrainResult tail = trainer.run();
  EXPECT_EQ(tail.first_step, kStop + 1);
  ASSERT_EQ(tail.losses.size(), static_cast<std::size_t>(kSteps - kStop));
  for (long i = 0; i < kSteps - kStop; ++i) {
    const double want = all.losses[kStop + i];
    EXPECT_NEAR(tail.losses[i], want, 1e-5 * std::abs(want)) << "step " << kStop + i + 1;
  }
  const Weights end = weights_of(resumed), want = weights_of(uninterrupted);
  for (const auto& [name, w] : want) {
    const double scale = std::max(w.abs().max().item<double>(), 1e-12);
    EXPECT_LE((end.at(name) - w).abs().max().item<double>() / scale, 1e-5) << name;
  }
}

}  // namespace
}  // namespace ranktune
