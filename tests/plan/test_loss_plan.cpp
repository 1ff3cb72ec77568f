// The planner's head with the fused linear cross-entropy (train.fused_loss, on by default on a GPU): no [tokens,
// vocab] logits are kept, so the head costs its input's gradient, a trained head's fp32 weight gradient per pipeline
// micro-batch, and one chunk of logits as working set; planned against the peaks measured on one H200
// (docs/benchmarks.md, 2026-12-07: bench/train_throughput.sh BENCH_SHAPE=8b, rows lora_ac and qlora_ac).
#include <gtest/gtest.h>

#include <cmath>

#include "ranktune/core/config.h"
#include "ranktune/model/linear_cross_entropy.h"
#include "ranktune/plan/balanced_plan.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

constexpr double GiB = 1024.0 * 1024 * 1024;

// The benchmark's 8B rows: LoRA r=16, 2 x 2048 tokens on one GPU, the fused loss.
TrainSetup lora_8b_rows() {
  TrainSetup s;
  s.lora_r = 16;
  s.micro_batch = 2;
  s.fused_loss = true;
  return s;
}

TEST(LossPlan, FusedLossFollowsTheTrainersRule) {
  TrainConfig t;
  EXPECT_EQ(t.fused_loss, "auto");
  EXPECT_TRUE(fused_loss_on(t, true));
  EXPECT_FALSE(fused_loss_on(t, false));
  t.fused_loss = "true";
  EXPECT_TRUE(fused_loss_on(t, false));
  t.fused_loss = "false";
  EXPECT_FALSE(fused_loss_on(t, true));
  Config cfg;
  EXPECT_TRUE(train_setup_from(cfg, true).fused_loss);
  EXPECT_FALSE(train_setup_from(cfg, false).fused_loss);
  // The chunk budget the plan assumes is the one the loss uses.
  EXPECT_EQ(TrainSetup{}.loss_chunk_bytes, kLinearCrossEntropyChunkBytes);
}

TEST(LossPlan, FusedHeadKeepsNoLogits) {
  const LlamaConfig m = test::llama3_8b();
  TrainSetup s = lora_8b_rows();
  const std::int64_t tokens = 2 * 2048, d = 4096, v = 128256;
  UnitCost head = layer_costs(m, s).back();
  EXPECT_EQ(head.activation_bytes, tokens * d * 2 * 2);  // the head input's gradient and the norm's input, bf16
  EXPECT_EQ(head.working_bytes, 2 * s.loss_chunk_bytes);
  s.lora_r = 0;  // a trained head: its fp32 weight gradient, per pipeline micro-batch
  s.pipeline_chunks = 2;
  head = layer_costs(m, s).back();
  EXPECT_EQ(head.activation_bytes, tokens * d * 2 * 2 + 2 * v * d * 4);
  s.fused_loss = false;  // the unfused loss: fp32 log-softmax of every token
  EXPECT_GE(layer_costs(m, s).back().activation_bytes, tokens * v * 4);
}

// One GPU, Llama-3-8B shape, LoRA r=16, 2 x 2048 tokens, activation checkpointing: the plan against the measured peak
// allocated memory (loading included) of the bf16 and the NF4 base.
TEST(LossPlan, EightBFootprintsMatchMeasuredPeaks) {
  const LlamaConfig m = test::llama3_8b();
  TrainSetup s = lora_8b_rows();
  s.activation_checkpointing = true;
  EXPECT_NEAR(training_footprint_bytes(m, s) / GiB, 17.43, 0.25);
  s.nf4 = true;
  EXPECT_NEAR(training_footprint_bytes(m, s) / GiB, 7.90, 0.25);
}

}  // namespace
}  // namespace ranktune
