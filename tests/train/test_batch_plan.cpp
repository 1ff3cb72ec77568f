// Batch arithmetic and the loss scales that make accumulation and DDP averaging equal one big batch.
#include <gtest/gtest.h>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "ranktune/train/batch_plan.h"

namespace ranktune {
namespace {

TEST(BatchPlan, GlobalBatchAndTokens) {
  TrainConfig t;
  t.micro_batch = 8;
  t.grad_accum = 2;
  t.seq_len = 128;
  const BatchPlan p = batch_plan_from_config(t, 4);
  EXPECT_EQ(p.global_batch(), 64);
  EXPECT_EQ(p.tokens_per_step(), 8192);
  EXPECT_EQ(p.describe(), "global batch 64 = micro batch 8 x grad_accum 2 x world size 4 (8192 tokens per step)");
  EXPECT_FALSE(p.last_micro_step(0));
  EXPECT_TRUE(p.last_micro_step(1));
  EXPECT_DOUBLE_EQ(p.mean_loss_scale(), 0.5);
}

// Rank r, micro-step m holds n[r][m] loss tokens with summed loss L[r][m]; the global mean is sum L / sum n.
// Each rank accumulates sum_m L * scale, DDP averages over ranks: the result must be the global mean.
TEST(BatchPlan, TokenLossScaleGivesGlobalMean) {
  const double L[2][3] = {{3.0, 1.5, 7.25}, {0.5, 4.0, 2.0}};
  const long n[2][3] = {{10, 3, 17}, {1, 12, 6}};
  long tokens = 0;
  double total = 0;
  for (int r = 0; r < 2; ++r)
    for (int m = 0; m < 3; ++m) tokens += n[r][m], total += L[r][m];
  const double scale = token_loss_scale(tokens, 2);
  double averaged = 0;
  for (int r = 0; r < 2; ++r) {
    double local = 0;
    for (int m = 0; m < 3; ++m) local += L[r][m] * scale;
    averaged += local / 2;
  }
  EXPECT_NEAR(averaged, total / static_cast<double>(tokens), 1e-15);
  EXPECT_THROW(token_loss_scale(0, 2), UsageError);
}

// Whole global batches per epoch (the sampler drops the incomplete last one), times the epochs, rounded up.
TEST(BatchPlan, StepsForEpochs) {
  const BatchPlan p{4, 2, 2, 128};            // global batch 16
  EXPECT_EQ(steps_for_epochs(p, 1, 100), 6);  // 100 rows: 6 whole batches
  EXPECT_EQ(steps_for_epochs(p, 2, 100), 12);
  EXPECT_EQ(steps_for_epochs(p, 0.5, 100), 3);
  EXPECT_EQ(steps_for_epochs(p, 0.4, 100), 3);  // 2.4 rounds up
  EXPECT_EQ(steps_for_epochs(p, 1, 16), 1);
  EXPECT_THROW(steps_for_epochs(p, 1, 15), ConfigError);
}

}  // namespace
}  // namespace ranktune
