// FLOPs per token and MFU against hand-computed numbers for the TinyLlama-1.1B benchmark shape.
#include <gtest/gtest.h>

#include "ranktune/train/flops.h"

namespace ranktune {
namespace {

// d 2048, 22 layers, 32 heads / 4 KV heads (head dim 64 -> k/v 256 wide), FFN 5632, vocab 32000, untied head.
double tinyllama_non_embedding() {
  const double d = 2048, kv = 256, ffn = 5632, vocab = 32000;
  const double attn = d * d * 2 + d * kv * 2;
  const double mlp = 3 * d * ffn;
  const double norms = 2 * d;
  return 22 * (attn + mlp + norms) + d + vocab * d;
}

TEST(Flops, FullFineTune) {
  FlopsShape s{tinyllama_non_embedding(), 0, false, 22, 2048, 2048};
  const double n = tinyllama_non_embedding();
  EXPECT_DOUBLE_EQ(train_flops_per_token(s), 6 * n + 12.0 * 22 * 2048 * 2048);
  EXPECT_EQ(n, 1034512384.0);  // 1.1B minus the 65.5M embedding
}

TEST(Flops, LoraCountsFourNForTheFrozenBase) {
  FlopsShape s{1e9, 1e7, true, 22, 2048, 2048};
  EXPECT_DOUBLE_EQ(train_flops_per_token(s), 4e9 + 6e7 + 12.0 * 22 * 2048 * 2048);
}

TEST(Flops, Mfu) {
  EXPECT_DOUBLE_EQ(mfu(50000, 6e9, 1, 1e15), 0.3);
  EXPECT_DOUBLE_EQ(mfu(400000, 6e9, 8, 1e15), 0.3);
  EXPECT_NEAR(mfu(41000, 6.75e9, 1), 41000 * 6.75e9 / 989e12, 1e-15);
  EXPECT_EQ(mfu(1, 1, 1, 0), 0);
}

}  // namespace
}  // namespace ranktune
