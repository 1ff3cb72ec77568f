// Trainer on CPU ranks (single at 1 rank, DDP over the MPI communicator at 2), a small Llama on the generated tiny
// corpus: a few steps lower the loss and commit the final checkpoint; a run saved at step N and resumed by a fresh
// Trainer (over a model initialised from another seed) holds bit-identical parameters after the load and continues
// with the losses and weights of the uninterrupted run. train.queue_ahead changes none of it, nor a stop's checkpoint.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/distributed/mpi_communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/distributed/signals.h"
#include "ranktune/io/checkpoint.h"
#include "ranktune/model/llama.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/lora.h"
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

// LoRA with dropout: every forward draws from the generator, so the order of the host's work shows in the results.
Config with_dropout(Config cfg) {
  cfg.lora.r = 4;
  cfg.lora.alpha = 8;
  cfg.lora.dropout = 0.1;
  config_validate(cfg);
  return cfg;
}

// train.queue_ahead (the next step's forward and backward queued before this step's loss is read) changes only when
// the host waits: over boundaries that evaluate, save and do neither, the losses, the evaluation and the weights are
// bit for bit those of the step-by-step loop.
TEST_F(TrainerTest, QueueAheadEqualsTheStepByStepLoop) {
  test::SharedScratchDir dir(env, "trainer_queue_ahead");
  std::vector<TrainResult> runs;
  std::vector<Weights> ends;
  for (bool ahead : {false, true}) {
    Config cfg = config(dir / (ahead ? "ahead" : "step_by_step"), 8);
    cfg.train.queue_ahead = ahead;
    cfg.train.eval_every = 3;
    cfg.checkpoint.every_steps = 5;
    cfg = with_dropout(cfg);
    Llama m = model(cfg, 1);
    lora_apply(*m, cfg.lora, static_cast<std::uint64_t>(cfg.seed));
    runs.push_back(train(cfg, m));
    ends.push_back(weights_of(m));
  }
  ASSERT_EQ(runs[0].losses.size(), 8u);
  ASSERT_EQ(runs[1].losses.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(runs[1].losses[i], runs[0].losses[i]) << "step " << i + 1;
  EXPECT_EQ(runs[1].final_eval_loss, runs[0].final_eval_loss);
  for (const auto& [name, w] : ends[0]) EXPECT_TRUE(at::equal(ends[1].at(name), w)) << name;
}

// A stop agreed at a boundary where the next step was already queued (its forward drew dropout masks) saves the
// boundary's state: the checkpoint equals the step-by-step loop's bit for bit, generators included, so the resumed
// run continues the uninterrupted one.
TEST_F(TrainerTest, AStopWithAStepQueuedAheadSavesTheBoundary) {
  test::SharedScratchDir dir(env, "trainer_queue_ahead_stop");
  signals_install();
  std::vector<LoadedCheckpoint> saved;
  for (bool ahead : {false, true}) {
    Config cfg = config(dir / (ahead ? "ahead" : "step_by_step"), 6);
    cfg.train.queue_ahead = ahead;
    cfg.checkpoint.at_end = false;
    cfg = with_dropout(cfg);
    Llama m = model(cfg, 1);
    lora_apply(*m, cfg.lora, static_cast<std::uint64_t>(cfg.seed));
    ASSERT_EQ(std::raise(SIGUSR1), 0);  // agreed at the first boundary, after step 1
    const TrainResult r = train(cfg, m);
    signals_clear();
    ASSERT_TRUE(r.stopped);
    ASSERT_TRUE(r.saved);
    ASSERT_EQ(r.steps, 1);
    auto ck = checkpoint_resume(env, "auto", cfg.checkpoint.dir, h5::FileLocking::best_effort);
    ASSERT_TRUE(ck.has_value());
    saved.push_back(std::move(*ck));
  }
  const CheckpointState &a = saved[0].state, &b = saved[1].state;
  ASSERT_TRUE(a.blobs.count("rng.cpu"));
  EXPECT_EQ(b.blobs, a.blobs);  // the generators and the sampler's cursor
  EXPECT_EQ(b.ints, a.ints);    // step, tokens, cursor
  ASSERT_EQ(b.tensors.size(), a.tensors.size());
  for (const auto& [name, t] : a.tensors) EXPECT_TRUE(at::equal(b.tensors.at(name), t)) << name;
}

}  // namespace
}  // namespace ranktune
