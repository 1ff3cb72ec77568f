// The planner's head with the fused linear cross-entropy (train.fused_loss, on by default on a GPU): no [tokens,
// vocab] logits are kept, so the head costs its input's gradient, a trained head's fp32 weight gradient per pipeline
// micro-batch, and one chunk of logits as working set; planned against the peaks measured on one H200
// (docs/benchmarks.md, 2026-12-07: bench/train_throughput.sh BENCH_SHAPE=8b, rows lora_ac and qlora_ac; the 1.1B
// shape's rows full, lora and qlora for the fused path's saved activations).
#include <gtest/gtest.h>

#include <cmath>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
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

// QLoRA r=16 with activation checkpointing and the fused loss, one sequence of `seq` tokens (the 70B row's setup).
TrainSetup qlora_checkpointed(std::int64_t seq) {
  TrainSetup s;
  s.lora_r = 16;
  s.nf4 = true;
  s.seq_len = seq;
  s.activation_checkpointing = true;
  s.fused_loss = true;
  return s;
}

// bench/train_throughput.sh's longest run: checkpointing offloaded and the MLP tiled at `chunk` tokens.
TrainSetup longest_8b(std::int64_t seq, std::int64_t chunk = 8192) {
  TrainSetup s = qlora_checkpointed(seq);
  s.activation_offload = true;
  s.mlp_chunk_tokens = chunk;
  return s;
}

// One GPU, the fused kernels and loss: the plan against the peak allocated memory (loading included) measured on an
// H200 (2026-12-07, bench/train_throughput.sh): the Llama-3-8B shape's LoRA r=16 rows at 2 x 2048 tokens with
// activation checkpointing on a bf16 and an NF4 base, and the TinyLlama-1.1B shape's full, LoRA and QLoRA rows at
// 4 x 2048 tokens without it. Before the fused path's own saved-activation count the 1.1B plans were 31.1 / 16.7 /
// 15.4 GiB.
TEST(LossPlan, FootprintsMatchMeasuredPeaks) {
  TrainSetup ac8b = lora_8b_rows(), one_b;
  ac8b.activation_checkpointing = true;
  TrainSetup offload8b = ac8b;
  offload8b.activation_offload = true;
  // bench/qlora_70b.sh: a "...-bnb-4bit" Llama-3.3-70B shape, 1 x 2048 tokens, checkpointed.
  const TrainSetup q70b = qlora_checkpointed(2048);
  one_b.micro_batch = 4;
  one_b.fused_loss = true;
  TrainSetup eager_1b = one_b;
  eager_1b.fused_kernels = false;
  eager_1b.fused_loss = false;
  auto with = [](TrainSetup s, int r, bool nf4) {
    s.lora_r = r;
    s.nf4 = nf4;
    return s;
  };
  const struct {
    const char* row;
    LlamaConfig model;
    TrainSetup setup;
    double measured_gib;
  } rows[] = {{"8B lora_ac", test::llama3_8b(), ac8b, 17.43},
              {"8B lora_offload (the prefetch)", test::llama3_8b(), offload8b, 16.53},
              {"70B qlora_ac on one H200", test::llama_shape(8192, 80, 64, 8, 28672, 128256), q70b, 43.75},
              {"8B qlora_ac", test::llama3_8b(), with(ac8b, 16, true), 7.90},
              // the longest run (131,072 tokens on an H200, 262,144 on an H100, 2026-12-07).
              {"8B qlora longest 131072", test::llama3_8b(), longest_8b(131072), 22.1},
              {"8B qlora longest 262144", test::llama3_8b(), longest_8b(262144), 38.21},
              {"1.1B full", test::tinyllama(), one_b, 27.29},
              {"1.1B lora", test::tinyllama(), with(one_b, 16, false), 11.03},
              {"1.1B qlora", test::tinyllama(), with(one_b, 16, true), 9.71},
              // train.kernels=eager train.fused_loss=false, on an H100: the LoRA row of 2026-12-06's side-by-side run
              // (docs/benchmarks.md) and the full fine-tune of issue #17's table (the step before the fused kernels).
              {"1.1B lora eager", test::tinyllama(), with(eager_1b, 16, false), 25.44},
              {"1.1B full eager", test::tinyllama(), eager_1b, 32.3}};
  for (const auto& r : rows)
    EXPECT_NEAR(training_footprint_bytes(r.model, r.setup) / GiB, r.measured_gib, 0.25) << r.row;
}

// What the fused path keeps depends on what is trained: LoRA dropout gives every adapter its own dropped input (and
// mask) in place of the shared norm output; adapters on q and v only keep no input of gate, up or down; the eager
// reference ops (and the CPU) keep the older, larger count.
TEST(LossPlan, SavedActivationsFollowWhatIsTrained) {
  const LlamaConfig m = test::tinyllama();
  TrainSetup s;
  s.micro_batch = 4;
  s.lora_r = 16;
  auto layer = [&] { return layer_costs(m, s)[1].activation_bytes; };
  const std::int64_t tokens = 4 * 2048, d = 2048, kv = 256, f = 5632, heads = 32;
  const std::int64_t shared = 2 * d + 2 * d + 2 * kv + 2 * f;  // norm inputs, q/out, k/v, gate/up
  EXPECT_EQ(layer(), tokens * ((shared + 2 * d + 7 * 16) * 2 + 8 + heads * 4));
  s.lora_dropout = 0.05;  // q, k, v, gate, up read d wide, o d wide, down f wide: each kept with a byte mask
  EXPECT_EQ(layer(), tokens * ((shared + 7 * 16) * 2 + 8 + heads * 4 + (6 * d + f) * 3));
  s.lora_dropout = 0;
  s.lora_targets = {"q", "v"};
  EXPECT_EQ(layer(), tokens * ((shared + d + 2 * 16) * 2 + 8 + heads * 4));
  s.lora_r = 0;  // full fine-tune: both norm outputs and down_proj's input
  EXPECT_EQ(layer(), tokens * ((shared + 2 * d + f) * 2 + 8 + heads * 4));
  // The eager ops: each norm an fp32 copy of its input and an fp32 inverse RMS, attention's bf16 q/k/v/output, the
  // SwiGLU op's gate and up; a full fine-tune adds both norms' bf16 outputs and the linears' inputs (h twice, the
  // SwiGLU product), LoRA each adapter's fp32 input and fp32 x A^T.
  s.fused_kernels = false;
  const std::int64_t eager_common = 2 * (4 * d + 4) + 2 * (2 * d + 2 * kv) + heads * 4 + 2 * 2 * f;
  EXPECT_EQ(layer(), tokens * (eager_common + 2 * 2 * d + 2 * 2 * d + 2 * f));
  s.lora_r = 16;
  s.lora_targets = {"q", "k", "v", "o", "gate", "up", "down"};
  EXPECT_EQ(layer(), tokens * (eager_common + 7 * 4 * 16 + 4 * (6 * d + f)));
  Config cfg;
  cfg.train.kernels = "eager";
  cfg.lora.dropout = 0.1;
  EXPECT_FALSE(train_setup_from(cfg, true).fused_kernels);
  EXPECT_EQ(train_setup_from(cfg, true).lora_dropout, 0.1);
}

// train.mlp_chunk_tokens: a tiled layer keeps its attention half and the MLP's input for the whole micro-step; the
// MLP's own tensors and its backward's ffn-wide gradients exist for one slice. Llama-3-8B, QLoRA with checkpointing
// offloaded, one sequence of 344,064 tokens (Unsloth's stated longest for this model on one 80 GB GPU): over 78 GiB
// untiled, where the refusal names the tiling; well under it tiled.
TEST(LossPlan, TiledMlpKeepsOneSliceOfTheMlp) {
  const LlamaConfig m = test::tinyllama();
  TrainSetup s;
  s.micro_batch = 4;
  s.lora_r = 16;
  const std::int64_t tokens = 4 * 2048, d = 2048, f = 5632;
  const UnitCost whole = layer_costs(m, s)[1];
  s.mlp_chunk_tokens = 1024;
  const UnitCost tiled = layer_costs(m, s)[1];
  // Untiled the MLP keeps the norm output (d) and gate and up (2f), and a slice of the adapters' x A^T; tiled, its
  // input (d) only.
  EXPECT_EQ(whole.activation_bytes - tiled.activation_bytes, tokens * (2 * 2 * f + 3 * 16 * 2));
  // Its backward holds the residual's gradients and, in turn, one slice of the MLP's tensors and gradients or the
  // whole micro-step's attention gradients (q, k, v, the output's, fp32 dq): here attention's are the larger.
  const std::int64_t kv = 256, mlp_slice = 1024 * ((d + 2 * f) * 2 + 3 * 16 * 2 + 3 * f * 2),
                     attention_grads = tokens * (2 * (2 * d + 2 * kv) + 4 * d);
  EXPECT_GT(attention_grads, mlp_slice);
  EXPECT_EQ(tiled.working_bytes, tokens * 2 * 2 * d + attention_grads);
  s.mlp_chunk_tokens = 8192;  // a slice as large as the micro-step is no tiling
  EXPECT_EQ(layer_costs(m, s)[1].activation_bytes, whole.activation_bytes);
  s.mlp_chunk_tokens = 1024;
  s.fused_kernels = false;  // the eager ops tile the same way: their MLP keeps gate and up, and fp32 adapter inputs
  TrainSetup eager_whole = s;
  eager_whole.mlp_chunk_tokens = 0;
  EXPECT_EQ(layer_costs(m, eager_whole)[1].activation_bytes - layer_costs(m, s)[1].activation_bytes,
            tokens * (2 * 2 * f + 3 * 4 * 16 + 4 * (2 * d + f) - 2 * d));

  TrainSetup longest = longest_8b(344064, /*chunk=*/0);
  const LlamaConfig b = test::llama3_8b();
  EXPECT_GT(training_footprint_bytes(b, longest) / GiB, 78.0);
  try {
    plan_balanced_for(b, longest, {{0, static_cast<std::int64_t>(78 * GiB)}}, 1);
    ADD_FAILURE() << "an untiled 344k-token step was planned into 78 GiB";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(e.hint().find("--train.mlp_chunk_tokens=8192"), std::string::npos) << e.hint();
  }
  longest.mlp_chunk_tokens = 16384;
  EXPECT_LT(training_footprint_bytes(b, longest) / GiB, 50.0);
}

}  // namespace
}  // namespace ranktune
