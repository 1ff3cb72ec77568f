// accelerate's device_map="balanced" reproduced on the Llama-3-8B shape (bf16): the placements users get.
#include <gtest/gtest.h>

#include "ranktune/plan/accelerate_balanced.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

using test::llama3_8b;

constexpr std::int64_t GiB = 1024LL * 1024 * 1024;

struct Counts {
  bool embed = false, head = false;
  int layers = 0;
};
std::vector<Counts> per_device(const AccelerateAssignment& a, int n) {
  std::vector<Counts> c(n);
  for (std::size_t u = 0; u < a.device_of_unit.size(); ++u) {
    const int d = a.device_of_unit[u];
    EXPECT_GE(d, 0) << "unit " << u << " offloaded";
    if (d < 0) continue;
    if (u == 0) c[d].embed = true;
    else if (u + 1 == a.device_of_unit.size()) c[d].head = true;
    else ++c[d].layers;
  }
  return c;
}

TEST(AccelerateBalanced, TwoH100s) {
  const auto a = accelerate_balanced_map(llama3_8b(), 2, {{0, 80 * GiB}, {1, 80 * GiB}});
  const auto c = per_device(a, 2);
  EXPECT_TRUE(c[0].embed);
  EXPECT_EQ(c[0].layers, 14);
  EXPECT_EQ(c[1].layers, 18);
  EXPECT_TRUE(c[1].head);
}

TEST(AccelerateBalanced, Eight24GiBGpus) {
  std::vector<DeviceBudget> d;
  for (int i = 0; i < 8; ++i) d.push_back({i, 24 * GiB});
  const auto c = per_device(accelerate_balanced_map(llama3_8b(), 2, d), 8);
  EXPECT_TRUE(c[0].embed);
  EXPECT_EQ(c[0].layers, 1);
  for (int i = 1; i <= 6; ++i) EXPECT_EQ(c[i].layers, 5) << "GPU " << i;
  EXPECT_EQ(c[7].layers, 1);
  EXPECT_TRUE(c[7].head);
}

TEST(AccelerateBalanced, TiedHeadStaysWithEmbedding) {
  LlamaConfig m = llama3_8b();
  m.tie_word_embeddings = true;
  const auto a = accelerate_balanced_map(m, 2, {{0, 80 * GiB}, {1, 80 * GiB}});
  EXPECT_EQ(a.device_of_unit.front(), 0);
  EXPECT_EQ(a.device_of_unit.back(), 0);
}

TEST(AccelerateBalanced, LowZeroLeavesGpuZeroLight) {
  const auto a = accelerate_balanced_map(llama3_8b(), 2, {{0, 80 * GiB}, {1, 80 * GiB}, {2, 80 * GiB}}, true);
  const auto c = per_device(a, 3);
  EXPECT_LT(c[0].layers, c[1].layers);
}

}  // namespace
}  // namespace ranktune
