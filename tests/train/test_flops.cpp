// FLOPs per token and MFU against hand-computed numbers for the TinyLlama-1.1B benchmark shape, and the attention
// term at an explicit head_dim (Mistral-Nemo).
#include <gtest/gtest.h>

#include "ranktune/train/flops.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

using test::mistral_nemo;
using test::tinyllama;

// tinyllama(): d 2048, 22 layers, 32 heads / 4 KV heads (head dim 64 -> k/v 256 wide), FFN 5632, vocab 32000, untied.
double tinyllama_non_embedding() {
  const double d = 2048, kv = 256, ffn = 5632, vocab = 32000;
  const double attn = d * d * 2 + d * kv * 2;
  const double mlp = 3 * d * ffn;
  const double norms = 2 * d;
  return 22 * (attn + mlp + norms) + d + vocab * d;
}

TEST(Flops, FullFineTune) {
  const double n = tinyllama_non_embedding();
  EXPECT_DOUBLE_EQ(train_flops_per_token(tinyllama(), 2048), 6 * n + 12.0 * 22 * 2048 * 2048);
  EXPECT_EQ(n, 1034512384.0);  // 1.1B minus the 65.5M embedding
}

TEST(Flops, TiedHeadCountsAsTheHeadsMatmul) {
  LlamaConfig tied = tinyllama();
  tied.tie_word_embeddings = true;
  EXPECT_DOUBLE_EQ(train_flops_per_token(tied, 2048), train_flops_per_token(tinyllama(), 2048));
}

TEST(Flops, LoraCountsFourNForTheFrozenBase) {
  const double n = tinyllama_non_embedding();
  EXPECT_DOUBLE_EQ(train_flops_per_token(tinyllama(), 2048, 10000000), 4 * n + 6e7 + 12.0 * 22 * 2048 * 2048);
}

// Mistral-Nemo: hidden 5120 but 32 heads of 128, so attention is 4096 wide.
TEST(Flops, AttentionTermUsesHeadDim) {
  const LlamaConfig c = mistral_nemo();
  const double n = 12247782400.0 - 131072.0 * 5120;
  EXPECT_DOUBLE_EQ(train_flops_per_token(c, 1024), 6 * n + 12.0 * 40 * 4096 * 1024);
}

TEST(Flops, Mfu) {
  EXPECT_DOUBLE_EQ(mfu(50000, 6e9, 1, 1e15), 0.3);
  EXPECT_DOUBLE_EQ(mfu(400000, 6e9, 8, 1e15), 0.3);
  EXPECT_NEAR(mfu(41000, 6.75e9, 1), 41000 * 6.75e9 / 989e12, 1e-15);
  EXPECT_EQ(mfu(1, 1, 1, 0), 0);
}

}  // namespace
}  // namespace ranktune
