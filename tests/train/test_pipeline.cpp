// Balanced execution on CPU stages: the GPipe order, and sharded (sequential and pipelined, m = 1, 2, 4) against the
// unsharded model — same loss and same gradients within fp32 rounding — for full fine-tuning, LoRA, tied and untied
// heads, with and without activation checkpointing; and activation checkpointing alone against plain backward.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "ranktune/core/error.h"
#include "ranktune/model/activation_checkpoint.h"
#include "ranktune/train/pipeline.h"
#include "ranktune/train/pipeline_schedule.h"
#include "train/pipeline_test_util.h"

namespace ranktune {
namespace {

TEST(GpipeSchedule, OrderRespectsDependencies) {
  for (int S : {1, 2, 3, 5})
    for (int m : {1, 2, 4, 7}) {
      const auto actions = gpipe_schedule(S, m);
      ASSERT_EQ(actions.size(), static_cast<std::size_t>(2 * S * m));
      std::set<std::pair<int, int>> fwd, bwd;
      for (const auto& a : actions) {
        if (a.kind == PipeAction::forward) {
          EXPECT_TRUE(bwd.empty()) << "GPipe: every forward before the first backward";
          if (a.stage > 0) EXPECT_TRUE(fwd.count({a.stage - 1, a.chunk})) << schedule_string(actions);
          EXPECT_EQ(a.tick, a.stage + a.chunk);
          fwd.insert({a.stage, a.chunk});
        } else {
          EXPECT_TRUE(fwd.count({a.stage, a.chunk}));
          if (a.stage < S - 1) EXPECT_TRUE(bwd.count({a.stage + 1, a.chunk})) << schedule_string(actions);
          bwd.insert({a.stage, a.chunk});
        }
      }
      EXPECT_EQ(fwd.size(), static_cast<std::size_t>(S * m));
      EXPECT_EQ(bwd.size(), static_cast<std::size_t>(S * m));
    }
}

TEST(GpipeSchedule, Wavefront) {
  EXPECT_EQ(schedule_string(gpipe_schedule(2, 3)), "F0.0|F1.0 F0.1|F1.1 F0.2|F1.2|B1.0|B0.0 B1.1|B0.1 B1.2|B0.2");
  EXPECT_EQ(schedule_string(gpipe_schedule(1, 2)), "F0.0|F0.1|B0.0|B0.1");
  EXPECT_THROW(gpipe_schedule(0, 1), std::invalid_argument);
}

struct Case {
  bool tied;
  int lora_r;
  bool checkpointing;
  std::vector<std::pair<int, int>> stages;  // unit ranges; units 0 = embed, 1..4 = layers, 5 = head
  std::int64_t checkpointed_layers = 0;     // train.activation_checkpointing_layers (0 = every layer)
};

void check_case(const Case& k) {
  const BatchTensors bt = test::make_batch(4, 12);
  const double scale = 1.0 / static_cast<double>(bt.loss_tokens);
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama ref = test::make_model(k.tied, k.lora_r, cpu);
  const double ref_loss = test::reference_step(*ref, bt, scale);
  const auto ref_grads = test::grads_of(*ref);
  ASSERT_FALSE(ref_grads.empty());
  for (int m : {1, 2, 4})
    for (StageThreads threads : {StageThreads::off, StageThreads::on}) {
      SCOPED_TRACE("micro_batches " + std::to_string(m) + (threads == StageThreads::on ? ", a thread per stage" : ""));
      Llama model = test::make_model(k.tied, k.lora_r, cpu);
      model->set_activation_checkpointing(k.checkpointing, k.checkpointed_layers);
      std::vector<StageRange> stages;
      for (auto [a, b] : k.stages) stages.push_back({at::Device(at::kCPU), a, b});
      place_stages(*model, stages);
      PipelineExecutor exec(*model, stages, m, threads);
      const double loss = exec.forward_backward(bt, scale).item<double>();
      EXPECT_NEAR(loss, ref_loss, 1e-6 * std::abs(ref_loss));
      test::expect_same_grads(test::grads_of(*model), ref_grads, 1e-5);
      const auto busy = exec.take_busy_seconds();
      ASSERT_EQ(busy.size(), stages.size());
      for (double s : busy) EXPECT_GT(s, 0.0);
    }
}

TEST(Pipeline, FullFineTuneUntiedThreeStages) { check_case({false, 0, false, {{0, 1}, {2, 3}, {4, 5}}}); }
TEST(Pipeline, FullFineTuneTiedHeadOnLastStage) { check_case({true, 0, false, {{0, 2}, {3, 5}}}); }
TEST(Pipeline, HeadAloneOnItsStage) { check_case({true, 0, false, {{0, 4}, {5, 5}}}); }
TEST(Pipeline, LoraFourStages) { check_case({false, 4, false, {{0, 1}, {2, 2}, {3, 4}, {5, 5}}}); }
TEST(Pipeline, LoraWithActivationCheckpointing) { check_case({true, 4, true, {{0, 2}, {3, 5}}}); }
TEST(Pipeline, FullWithActivationCheckpointing) { check_case({false, 0, true, {{0, 1}, {2, 3}, {4, 5}}}); }
TEST(Pipeline, LoraWithHalfTheLayersRecomputing) { check_case({false, 4, true, {{0, 2}, {3, 5}}, 2}); }
TEST(Pipeline, OneStageIsThePlainModel) { check_case({false, 0, false, {{0, 5}}}); }

TEST(Pipeline, RefusesMoreChunksThanSequences) {
  Llama model = test::make_model(false, 0, at::TensorOptions().dtype(at::kFloat));
  std::vector<StageRange> stages{{at::Device(at::kCPU), 0, 5}};
  PipelineExecutor exec(*model, stages, 8);
  EXPECT_THROW(exec.forward_backward(test::make_batch(4, 8), 1.0), ConfigError);
}

// A stage that fails in its own thread (here the last: a target outside the vocabulary) ends the micro-step with its
// error on the caller's thread; the stages waiting for its hand-off stop instead of hanging.
TEST(Pipeline, FailureInOneStageThreadReachesTheCaller) {
  Llama model = test::make_model(false, 0, at::TensorOptions().dtype(at::kFloat));
  const std::vector<StageRange> stages{{at::Device(at::kCPU), 0, 2}, {at::Device(at::kCPU), 3, 5}};
  place_stages(*model, stages);
  PipelineExecutor exec(*model, stages, 2, StageThreads::on);
  BatchTensors bt = test::make_batch(4, 8);
  bt.targets.fill_(1 << 20);
  EXPECT_THROW(exec.forward_backward(bt, 1.0), c10::Error);
}

TEST(Pipeline, RefusesGapsInThePlacement) {
  Llama model = test::make_model(false, 0, at::TensorOptions().dtype(at::kFloat));
  EXPECT_THROW(place_stages(*model, {{at::Device(at::kCPU), 0, 2}, {at::Device(at::kCPU), 4, 5}}), Error);
  EXPECT_THROW(place_stages(*model, {{at::Device(at::kCPU), 0, 3}}), Error);
}

// Activation checkpointing alone, with LoRA dropout: the recomputation must draw the same dropout masks.
TEST(ActivationCheckpointing, SameGradientsAsPlainBackwardWithDropout) {
  const BatchTensors bt = test::make_batch(3, 10);
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama plain = test::make_model(false, 4, cpu, /*lora_dropout=*/0.3);
  Llama ckpt = test::make_model(false, 4, cpu, /*lora_dropout=*/0.3);
  ckpt->set_activation_checkpointing(true);
  at::manual_seed(99);
  const double a = test::reference_step(*plain, bt, 0.01);
  at::manual_seed(99);
  const double b = test::reference_step(*ckpt, bt, 0.01);
  EXPECT_DOUBLE_EQ(a, b);
  test::expect_same_grads(test::grads_of(*ckpt), test::grads_of(*plain), 1e-6);
  // And the dropout did matter: another seed gives another loss.
  at::manual_seed(100);
  Llama other = test::make_model(false, 4, cpu, 0.3);
  EXPECT_NE(test::reference_step(*other, bt, 0.01), a);
}

// Some layers recomputing, the others keeping their activations (train.activation_checkpointing_layers): the loss and
// gradients of plain backward, with LoRA dropout drawn in both kinds of layer.
TEST(ActivationCheckpointing, SomeLayersRecomputingGiveTheSameGradients) {
  const BatchTensors bt = test::make_batch(3, 10);
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama plain = test::make_model(false, 4, cpu, /*lora_dropout=*/0.3);
  at::manual_seed(99);
  const double a = test::reference_step(*plain, bt, 0.01);
  for (const std::int64_t layers : {1, 2, 3}) {
    SCOPED_TRACE(std::to_string(layers) + " layers recompute");
    Llama part = test::make_model(false, 4, cpu, 0.3);
    part->set_activation_checkpointing(true, layers);
    EXPECT_EQ(part->activation_checkpointed_layers(), layers);
    at::manual_seed(99);
    EXPECT_DOUBLE_EQ(test::reference_step(*part, bt, 0.01), a);
    test::expect_same_grads(test::grads_of(*part), test::grads_of(*plain), 1e-6);
  }
}

TEST(ActivationCheckpointing, EvaluationUnderNoGradIsUnchanged) {
  const BatchTensors bt = test::make_batch(2, 8);
  Llama m = test::make_model(true, 0, at::TensorOptions().dtype(at::kFloat));
  at::NoGradGuard no_grad;
  const at::Tensor a = m->forward(bt.tokens, bt.positions);
  m->set_activation_checkpointing(true);
  const at::Tensor b = m->forward(bt.tokens, bt.positions);
  EXPECT_TRUE(at::equal(a, b));
}

}  // namespace
}  // namespace ranktune
