// The planner with a 4-bit NF4 base (QLoRA, model.quantize=nf4): each decoder linear costs bitsandbytes' bytes (packed
// codes, 8-bit absmaxes, fp32 nested absmaxes, code tables) instead of 2 a weight, plus one dequantized linear in 16
// bits as a working set per stage. Expected values are computed here from the format, not from the planner's helpers.
#include <gtest/gtest.h>

#include <algorithm>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "ranktune/plan/balanced_plan.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

constexpr std::int64_t GiB = 1024LL * 1024 * 1024;

LlamaConfig llama33_70b() { return test::llama_shape(8192, 80, 64, 8, 28672, 128256); }

// One linear's NF4 bytes as bitsandbytes stores them: uint8 [n/2] codes, uint8 [n/64] absmax, float32 [n/64/256]
// nested absmax, float32 [16] quant_map and [256] nested_quant_map (the fixture bnb4_tiny's q_proj: 2048 + 64 + 4 +
// 64 + 1024 bytes).
std::int64_t bnb_bytes(std::int64_t out, std::int64_t in) {
  const std::int64_t n = out * in;
  const std::int64_t absmax = (n + 63) / 64;
  const std::int64_t nested = (absmax + 255) / 256;
  return (n + 1) / 2 + absmax + 4 * nested + 4 * 16 + 4 * 256;
}

struct Shape {
  std::int64_t d, q, kv, f;
};

std::int64_t layer_nf4_bytes(const Shape& s) {
  return bnb_bytes(s.q, s.d) + 2 * bnb_bytes(s.kv, s.d) + bnb_bytes(s.d, s.q) + 2 * bnb_bytes(s.f, s.d) +
         bnb_bytes(s.d, s.f) + 2 * s.d * 2;  // + the two RMSNorm weights in bf16
}

std::int64_t sum_weights(const std::vector<UnitCost>& units) {
  std::int64_t b = 0;
  for (const auto& u : units) b += u.weight_bytes;
  return b;
}

TEST(QloraPlan, Nf4BytesFollowBitsandbytesLayout) {
  EXPECT_EQ(nf4_base_bytes(64, 64), 2048 + 64 + 4 + 64 + 1024);  // what bnb4_tiny's q_proj holds
  EXPECT_EQ(nf4_base_bytes(4096, 4096), bnb_bytes(4096, 4096));
  EXPECT_EQ(nf4_base_bytes(3, 7), 11 + 1 + 4 + 64 + 1024);  // odd count: a padding nibble, one partial block
}

TEST(QloraPlan, Llama70bOnAFourBitBase) {
  const LlamaConfig m = llama33_70b();
  const Shape s{8192, 8192, 1024, 28672};
  TrainSetup bf16;  // GPU, LoRA r=16 on all linears, 1 x 2048 tokens, checkpointed: the 70B run
  bf16.lora_r = 16;
  bf16.activation_checkpointing = true;
  TrainSetup nf4 = bf16;
  nf4.nf4 = true;
  const auto a = layer_costs(m, bf16), b = layer_costs(m, nf4);
  ASSERT_EQ(b.size(), 82u);
  const std::int64_t embed = 128256LL * 8192 * 2;  // embedding and untied head stay bf16
  EXPECT_EQ(b[0].weight_bytes, embed);
  EXPECT_EQ(b[1].weight_bytes, layer_nf4_bytes(s));
  EXPECT_EQ(sum_weights(b), embed + 80 * layer_nf4_bytes(s) + embed + 8192 * 2);
  // About 0.516 bytes a linear weight: 32.9 GiB of base linears instead of 127.5 GiB.
  const double linear_gib = 80.0 * (layer_nf4_bytes(s) - 4 * 8192) / GiB;
  EXPECT_NEAR(linear_gib, 32.9, 0.05);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i].state_bytes, a[i].state_bytes) << a[i].name;  // the adapters and their state do not change
    EXPECT_EQ(b[i].activation_bytes, a[i].activation_bytes) << a[i].name;
  }
  // The dequantization working set: gate/up/down, 28672 x 8192 in bf16, on top of the layer's recompute.
  EXPECT_EQ(b[1].working_bytes - a[1].working_bytes, 28672LL * 8192 * 2);
  EXPECT_EQ(b.back().working_bytes, a.back().working_bytes);
  // The whole footprint: the exact weights, the LoRA state, the activations and the largest working set.
  std::int64_t state = 0, act = 0, working = 0;
  for (const auto& u : b)
    state += u.state_bytes, act += u.activation_bytes, working = std::max(working, u.working_bytes);
  const std::int64_t lora_per_layer = 16 * ((8192 + 8192) + 2 * (8192 + 1024) + (8192 + 8192) + 3 * (8192 + 28672));
  EXPECT_EQ(state, 80 * lora_per_layer * (4 + 4 + 8));
  const std::int64_t total = sum_weights(b) + state + act + working;
  EXPECT_EQ(training_footprint_bytes(m, nf4), total);
  // 36.8 GiB of base (with the bf16 embedding and head), 3.1 GiB of fp32 adapters with their gradients and moments,
  // 5.5 GiB of activations and working sets at 1 x 2048 tokens (the loss's fp32 buffers over a 128256 vocabulary).
  EXPECT_GT(static_cast<double>(total) / GiB, 44.0);
  EXPECT_LT(static_cast<double>(total) / GiB, 47.0);
  EXPECT_LT(training_footprint_bytes(m, nf4) * 3, training_footprint_bytes(m, bf16));
}

TEST(QloraPlan, Llama8bOnAFourBitBase) {
  const LlamaConfig m = test::llama3_8b();
  const Shape s{4096, 4096, 1024, 14336};
  TrainSetup nf4;
  nf4.lora_r = 16;
  nf4.micro_batch = 2;
  nf4.nf4 = true;
  const auto units = layer_costs(m, nf4);
  const std::int64_t embed = 128256LL * 4096 * 2;
  EXPECT_EQ(sum_weights(units), 2 * embed + 32 * layer_nf4_bytes(s) + 4096 * 2);
  // Without activation checkpointing the layer's working set is one dequantized linear and its backward's gradients
  // (three ffn-wide, two hidden-wide, bf16, for 2 x 2048 tokens).
  EXPECT_EQ(units[1].working_bytes, 14336LL * 4096 * 2 + 2 * 2048 * 2 * (3 * 14336 + 2 * 4096));
  // On the CPU (tests, CI) the dequantized weight is fp32; the packed base is the same.
  TrainSetup cpu = nf4;
  cpu.on_gpu = false;
  const auto c = layer_costs(m, cpu);
  EXPECT_EQ(c[1].working_bytes, 14336LL * 4096 * 4);
  EXPECT_EQ(c[1].weight_bytes, layer_nf4_bytes(s) + 2 * 4096 * 2);  // norms in fp32
}

TEST(QloraPlan, ConfigAndBnbDirectoryTurnItOn) {
  Config cfg;
  cfg.lora.r = 16;
  EXPECT_FALSE(train_setup_from(cfg, true).nf4);
  cfg.model.quantize = "nf4";
  EXPECT_TRUE(train_setup_from(cfg, true).nf4);
  // A bitsandbytes 4-bit model directory is planned in 4 bits whatever the setup says.
  LlamaConfig m = test::llama3_8b();
  TrainSetup lora;
  lora.lora_r = 16;
  const std::int64_t plain = sum_weights(layer_costs(m, lora));
  m.bnb_nf4 = true;
  TrainSetup q = lora;
  q.nf4 = true;
  EXPECT_EQ(sum_weights(layer_costs(m, lora)), sum_weights(layer_costs(test::llama3_8b(), q)));
  EXPECT_LT(sum_weights(layer_costs(m, lora)) * 2, plain);
}

// train.fp8_matmuls (a 16-bit base): each layer's working set grows by one linear's e4m3 copies, the largest being
// gate/up/down's weight (a byte a weight, fp32 scales a row) with its 2 x 2048 e4m3 rows of 14336 (and their scales);
// weights and saved activations do not change, and neither does a CPU's plan (no FP8 copies there) nor a full
// fine-tune's.
TEST(QloraPlan, Fp8MatmulsAddOneLinearsCopiesToTheWorkingSet) {
  const LlamaConfig m = test::llama3_8b();
  TrainSetup bf16;
  bf16.lora_r = 16;
  bf16.micro_batch = 2;
  bf16.activation_checkpointing = true;
  bf16.activation_offload = true;
  bf16.fused_loss = true;  // as on a GPU: then a layer's working set is the step's largest
  TrainSetup fp8 = bf16;
  fp8.fp8_matmuls = true;
  const auto a = layer_costs(m, bf16), b = layer_costs(m, fp8);
  ASSERT_EQ(a.size(), b.size());
  const std::int64_t copies = 14336LL * 4096 + 4 * 14336 + 2 * 2048 * (14336 + 4);
  for (std::size_t i = 1; i + 1 < a.size(); ++i) {
    EXPECT_EQ(b[i].working_bytes - a[i].working_bytes, copies) << a[i].name;
    EXPECT_EQ(b[i].bytes(), a[i].bytes()) << a[i].name;
  }
  EXPECT_EQ(b.back().working_bytes, a.back().working_bytes);  // the head
  EXPECT_EQ(training_footprint_bytes(m, fp8) - training_footprint_bytes(m, bf16), copies);
  TrainSetup cpu = fp8;
  cpu.on_gpu = false;
  TrainSetup cpu16 = bf16;
  cpu16.on_gpu = false;
  EXPECT_EQ(training_footprint_bytes(m, cpu), training_footprint_bytes(m, cpu16));
  Config cfg;
  cfg.lora.r = 16;
  cfg.train.fp8_matmuls = true;
  EXPECT_TRUE(train_setup_from(cfg, true).fp8_matmuls);
}

// Balanced: the 70B QLoRA run fits two 40 GiB budgets; a bf16 LoRA base does not, and the refusal names nf4.
TEST(QloraPlan, BalancedSeventyBOverTwoDevices) {
  const LlamaConfig m = llama33_70b();
  TrainSetup s;
  s.lora_r = 16;
  s.activation_checkpointing = true;
  s.micro_batch = 2;
  const std::vector<DeviceBudget> two{{0, 40 * GiB}, {1, 40 * GiB}};
  try {
    plan_balanced_for(m, s, two, 2);
    FAIL() << "a bf16 70B base fit 80 GiB";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(e.hint().find("--model.quantize=nf4"), std::string::npos) << e.hint();
  }
  s.nf4 = true;
  const BalancedPlan p = plan_balanced_for(m, s, two, 2);
  ASSERT_EQ(p.stages.size(), 2u);
  for (const Stage& st : p.stages) {
    EXPECT_LE(st.bytes, st.budget);
    EXPECT_FALSE(st.empty());
  }
  EXPECT_NE(plan_table(p).find("layer"), std::string::npos);
}

}  // namespace
}  // namespace ranktune
