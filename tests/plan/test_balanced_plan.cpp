// The balanced planner: exactness against brute force, contiguity, memory limits, uneven budgets, refusals with
// numbers, budget parsing, and the cost model's parameter counts against the published model sizes.
#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>

#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/error.h"
#include "ranktune/core/pinned_bytes.h"
#include "ranktune/core/text.h"
#include "ranktune/plan/balanced_plan.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

using test::llama3_8b;
using test::mistral_nemo;
using test::tinyllama;

constexpr std::int64_t GiB = 1024LL * 1024 * 1024;

std::vector<UnitCost> synthetic(const std::vector<std::pair<std::int64_t, double>>& bytes_flops) {
  std::vector<UnitCost> u;
  for (std::size_t i = 0; i < bytes_flops.size(); ++i) {
    UnitCost c;
    c.name = "u" + std::to_string(i);
    c.weight_bytes = bytes_flops[i].first;
    c.flops = bytes_flops[i].second;
    u.push_back(c);
  }
  return u;
}

void expect_valid(const BalancedPlan& p) {
  int next = 0;
  for (const auto& s : p.stages) {
    EXPECT_LE(s.bytes, s.budget) << "device " << s.device;
    if (s.empty()) continue;
    EXPECT_EQ(s.first, next) << "stages must be contiguous and in order";
    next = s.last + 1;
  }
  EXPECT_EQ(next, static_cast<int>(p.units.size())) << "every unit placed";
}

// Smallest bottleneck over every way to cut n units into S contiguous (possibly empty) stages within budgets.
double brute_force(const std::vector<UnitCost>& u, const std::vector<DeviceBudget>& d) {
  const int n = static_cast<int>(u.size()), s = static_cast<int>(d.size());
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> cuts(s - 1, 0);
  std::function<void(int, int)> rec = [&](int i, int from) {
    if (i == s - 1) {
      double worst = 0;
      int start = 0;
      for (int k = 0; k < s; ++k) {
        const int end = k + 1 < s ? cuts[k] : n;
        std::int64_t b = 0;
        double fl = 0;
        for (int j = start; j < end; ++j) b += u[j].bytes(), fl += u[j].flops;
        if (b > d[k].bytes) return;
        worst = std::max(worst, fl);
        start = end;
      }
      best = std::min(best, worst);
      return;
    }
    for (int c = from; c <= n; ++c) cuts[i] = c, rec(i + 1, c);
  };
  rec(0, 0);
  return best;
}

TEST(BalancedPlan, MatchesBruteForceOnRandomInstances) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 9), s = 1 + static_cast<int>(rng() % 4);
    std::vector<std::pair<std::int64_t, double>> bf;
    for (int i = 0; i < n; ++i) bf.push_back({1 + static_cast<std::int64_t>(rng() % 10), 1.0 + rng() % 20});
    PlanRequest req;
    req.units = synthetic(bf);
    for (int k = 0; k < s; ++k) req.devices.push_back({k, 5 + static_cast<std::int64_t>(rng() % 30)});
    const double want = brute_force(req.units, req.devices);
    if (std::isinf(want)) {
      EXPECT_THROW(plan_balanced(req), OutOfMemoryError) << "trial " << trial;
      continue;
    }
    const BalancedPlan p = plan_balanced(req);
    expect_valid(p);
    EXPECT_DOUBLE_EQ(p.bottleneck_flops(), want) << "trial " << trial;
  }
}

TEST(BalancedPlan, UniformLayersBalanceWithinOneLayer) {
  for (int s : {2, 3, 4, 8}) {
    PlanRequest req;
    req.units = synthetic(std::vector<std::pair<std::int64_t, double>>(32, {1 * GiB, 1.0}));
    for (int k = 0; k < s; ++k) req.devices.push_back({k, 80 * GiB});
    const BalancedPlan p = plan_balanced(req);
    expect_valid(p);
    EXPECT_LE(p.bottleneck_flops(), std::ceil(32.0 / s)) << s << " devices";
    double lightest = 1e9;
    for (const auto& st : p.stages) lightest = std::min(lightest, st.flops);
    EXPECT_LE(p.bottleneck_flops() - lightest, 1.0) << s << " devices";
  }
}

TEST(BalancedPlan, UnevenBudgetsShiftLayers) {
  PlanRequest req;
  req.units = synthetic(std::vector<std::pair<std::int64_t, double>>(10, {1 * GiB, 1.0}));
  req.devices = {{0, 2 * GiB}, {1, 40 * GiB}};
  const BalancedPlan p = plan_balanced(req);
  expect_valid(p);
  EXPECT_EQ(p.stages[0].last - p.stages[0].first + 1, 2);
  EXPECT_EQ(p.stages[1].last - p.stages[1].first + 1, 8);
}

TEST(BalancedPlan, ImpossibleFitNamesTheNumbers) {
  PlanRequest req;
  req.units = synthetic({{10 * GiB, 1}, {50 * GiB, 1}, {10 * GiB, 1}});
  req.devices = {{0, 40 * GiB}, {1, 40 * GiB}};
  try {
    plan_balanced(req);
    FAIL() << "no error";
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("70.0 GiB in total"), std::string::npos) << msg;
    EXPECT_NE(msg.find("80.0 GiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'u1' alone needs 50.0 GiB (largest device budget 40.0 GiB)"), std::string::npos) << msg;
    EXPECT_EQ(e.code(), ExitCode::out_of_memory);
  }
}

TEST(BalancedPlan, TooBigModelSuggestsWhatToChange) {
  TrainSetup full;
  full.micro_batch = 4;
  full.seq_len = 2048;
  try {
    plan_balanced_for(llama3_8b(), full, {{0, 80 * GiB}}, 1);
    FAIL() << "an 8B full fine-tune fit one 80 GiB GPU";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(e.hint().find("--lora.r=16"), std::string::npos) << e.hint();
  }
  // Two GPUs hold it in full fine-tune with activation checkpointing.
  full.activation_checkpointing = true;
  const BalancedPlan p = plan_balanced_for(llama3_8b(), full, {{0, 78 * GiB}, {1, 78 * GiB}}, 4);
  expect_valid(p);
}

TEST(BalancedPlan, TiedHeadReplicaOnlyWhenSplit) {
  LlamaConfig m = tinyllama();
  m.tie_word_embeddings = true;
  TrainSetup s;
  const auto one = plan_balanced_for(m, s, {{0, 200 * GiB}}, 1);
  EXPECT_EQ(one.stages[0].bytes, training_footprint_bytes(m, s));
  const auto two = plan_balanced_for(m, s, {{0, 200 * GiB}, {1, 200 * GiB}}, 1);
  EXPECT_GT(two.stages[0].bytes + two.stages[1].bytes, training_footprint_bytes(m, s));
}

// A stage needs its units' bytes plus the largest working set among them (a checkpointed layer's recompute, the
// loss's backward buffers): a budget that holds only the sum is refused, the sum plus that working set fits.
TEST(BalancedPlan, CheckpointedStageHoldsOneLayersRecompute) {
  TrainSetup s;
  s.seq_len = 2048;
  s.micro_batch = 4;
  s.activation_checkpointing = true;
  const auto units = layer_costs(tinyllama(), s);
  std::int64_t sum = 0, working = 0;
  for (const auto& u : units) sum += u.bytes(), working = std::max(working, u.working_bytes);
  ASSERT_GT(working, 0);
  EXPECT_EQ(units[1].working_bytes, units[2].working_bytes);  // every decoder layer recomputes the same amount
  EXPECT_GT(units[1].working_bytes, 0);
  EXPECT_EQ(units.front().working_bytes, 0);  // the embedding is not checkpointed
  EXPECT_THROW(plan_balanced_for(tinyllama(), s, {{0, sum + working - 1}}, 1), OutOfMemoryError);
  const auto fits = plan_balanced_for(tinyllama(), s, {{0, sum + working}}, 1);
  EXPECT_EQ(fits.stages[0].bytes, sum + working);
  EXPECT_EQ(training_footprint_bytes(tinyllama(), s), sum + working);
  // Without checkpointing nothing is recomputed: a layer's backward holds only its own gradients (the MLP's three
  // ffn-wide ones and two hidden-wide ones, bf16), with the fused or the eager ops; the CPU's count has none.
  TrainSetup plain = s;
  plain.activation_checkpointing = false;
  for (bool fused : {true, false}) {
    plain.fused_kernels = fused;
    for (const auto& u : layer_costs(tinyllama(), plain))
      if (u.name.rfind("layer", 0) == 0) EXPECT_EQ(u.working_bytes, 4 * 2048 * 2 * (3 * 5632 + 2 * 2048)) << u.name;
  }
  plain.on_gpu = false;
  for (const auto& u : layer_costs(tinyllama(), plain))
    if (u.name.rfind("layer", 0) == 0) EXPECT_EQ(u.working_bytes, 0) << u.name;
}

// Pipelined (GPipe), every micro-batch's saved activations stay until its backward, but a backward's working set is
// one micro-batch's: the head's and the layers' working bytes shrink with m, what is saved does not.
TEST(BalancedPlan, PipelineMicroBatchesShrinkOnlyWorkingSets) {
  TrainSetup s;
  s.seq_len = 2048;
  s.micro_batch = 16;
  s.activation_checkpointing = true;
  TrainSetup piped = s;
  piped.pipeline_chunks = 8;
  const auto one = layer_costs(llama3_8b(), s), eight = layer_costs(llama3_8b(), piped);
  ASSERT_EQ(one.size(), eight.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(eight[i].activation_bytes, one[i].activation_bytes) << one[i].name;
    EXPECT_EQ(eight[i].working_bytes * 8, one[i].working_bytes) << one[i].name;
  }
  EXPECT_GT(one.back().working_bytes, 0);
  // m larger than the micro-batch cannot split below one sequence.
  TrainSetup over = s;
  over.pipeline_chunks = 64;
  EXPECT_EQ(layer_costs(llama3_8b(), over).back().working_bytes * 16, one.back().working_bytes);
  const auto p1 = plan_balanced_for(llama3_8b(), s, {{0, 200 * GiB}, {1, 200 * GiB}}, 1);
  const auto p8 = plan_balanced_for(llama3_8b(), s, {{0, 200 * GiB}, {1, 200 * GiB}}, 8);
  EXPECT_LT(p8.stages[1].bytes, p1.stages[1].bytes);
}

TEST(BalancedPlan, PipelineSpeedupFollowsGpipe) {
  PlanRequest req;
  req.units = synthetic(std::vector<std::pair<std::int64_t, double>>(8, {1, 1.0}));
  req.devices = {{0, 100}, {1, 100}};
  req.micro_batches = 8;
  const BalancedPlan p = plan_balanced(req);
  EXPECT_NEAR(p.predicted_speedup_over_sequential(), 2.0 * 8 / 9, 1e-12);  // S*m/(m+S-1)
  req.micro_batches = 1;
  EXPECT_NEAR(plan_balanced(req).predicted_speedup_over_sequential(), 1.0, 1e-12);
}

TEST(BalancedPlan, TableShowsEveryDevice) {
  const auto p = plan_balanced_for(tinyllama(), TrainSetup{}, {{0, 40 * GiB}, {1, 40 * GiB}}, 4);
  const std::string t = plan_table(p);
  EXPECT_NE(t.find("cuda:0"), std::string::npos);
  EXPECT_NE(t.find("cuda:1"), std::string::npos);
  EXPECT_NE(t.find("embed .. layer"), std::string::npos);
  EXPECT_NE(t.find("predicted"), std::string::npos);
}

TEST(MemoryBudgets, Parse) {
  const auto b = parse_memory_budgets("0:70GiB, 1:75.5GiB,3:1000MB");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].bytes, 70 * GiB);
  EXPECT_EQ(b[1].bytes, static_cast<std::int64_t>(75.5 * GiB));
  EXPECT_EQ(b[2].device, 3);
  EXPECT_EQ(b[2].bytes, 1000000000);
  EXPECT_THROW(parse_memory_budgets("0=70GiB"), ConfigError);
  EXPECT_THROW(parse_memory_budgets("0:70GiX"), ConfigError);
  EXPECT_THROW(parse_memory_budgets("0:1GiB,0:2GiB"), ConfigError);
  EXPECT_THROW(parse_memory_budgets("a:1GiB"), ConfigError);
}

TEST(LayerCost, ParameterCountsMatchPublishedModels) {
  EXPECT_EQ(llama_parameter_count(tinyllama()), 1100048384);  // TinyLlama-1.1B
  EXPECT_EQ(llama_parameter_count(llama3_8b()), 8030261248);  // Meta-Llama-3-8B
}

// Mistral-Nemo sets head_dim 128 with hidden 5120 and 32 heads: q is 4096 wide, not 5120 (hidden / heads would give
// 160 and 12.77 B parameters). The planner's units must use the model's head_dim.
TEST(LayerCost, ExplicitHeadDimMistralNemo) {
  const LlamaConfig m = mistral_nemo();
  EXPECT_EQ(llama_parameter_count(m), 12247782400);  // Mistral-Nemo-Base-2407: 12.25 B
  const std::int64_t d = 5120, q = 4096, kv = 1024, f = 14336, t = 2048;
  const std::int64_t layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d;
  EXPECT_EQ(llama_layer_parameter_count(m), layer);
  TrainSetup s;  // GPU, full fine-tune, 1 x 2048 tokens
  const auto units = layer_costs(m, s);
  ASSERT_EQ(units.size(), 42u);
  EXPECT_EQ(units[1].weight_bytes, 2 * layer);
  // Saved by the fused path of a full fine-tune: both norms' inputs and outputs, q and the attention output (q wide),
  // k and v, gate, up and down_proj's input (ffn wide), bf16; two fp32 inverse RMS and 32 heads' fp32 log-sum-exp.
  EXPECT_EQ(units[1].activation_bytes, t * (2 * (4 * d + 2 * q + 2 * kv + 3 * f) + 8 + 32 * 4));
  TrainSetup cpu;  // the CPU's older count, fp32: nine hidden-wide tensors, of which three are q wide
  cpu.on_gpu = false;
  EXPECT_EQ(layer_costs(m, cpu)[1].activation_bytes, t * 4 * (6 * d + 3 * q + 2 * kv + 4 * f));
  EXPECT_DOUBLE_EQ(units[1].flops, static_cast<double>(t) * (6.0 * layer + 12.0 * t * q));
  std::int64_t weights_and_state = 0;
  for (const auto& u : units) weights_and_state += u.weight_bytes + u.state_bytes;
  EXPECT_EQ(weights_and_state, 16 * llama_parameter_count(m));
  // LoRA on q and o: r * (in + out) with the 4096-wide side.
  TrainSetup lora;
  lora.lora_r = 8;
  lora.lora_targets = {"q", "o"};
  const auto adapted = layer_costs(m, lora);
  EXPECT_EQ(adapted[1].state_bytes, 2 * 8 * (d + q) * (4 + 4 + 8));
}

TEST(LayerCost, LoraAndCheckpointingShrinkTheFootprint) {
  TrainSetup full;
  full.micro_batch = 4;
  full.seq_len = 2048;
  TrainSetup lora = full;
  lora.lora_r = 16;
  TrainSetup ckpt = full;
  ckpt.activation_checkpointing = true;
  const auto m = tinyllama();
  EXPECT_LT(training_footprint_bytes(m, lora), training_footprint_bytes(m, full));
  // Parameters and their state shrink ~7x (frozen bf16 base); activations stay (and dominate at seq 2048).
  auto param_bytes = [&](const TrainSetup& s) {
    std::int64_t b = 0;
    for (const auto& u : layer_costs(m, s)) b += u.weight_bytes + u.state_bytes;
    return b;
  };
  EXPECT_LT(param_bytes(lora) * 6, param_bytes(full));
  // Against the peaks ranktune measured for this shape: tests/plan/test_loss_plan.cpp (within 0.25 GiB). Here: LoRA
  // keeps less than half of the full fine-tune, which keeps less than HF's measured 35.4 GiB.
  EXPECT_LT(training_footprint_bytes(m, lora) * 2, training_footprint_bytes(m, full));
  EXPECT_LT(static_cast<double>(training_footprint_bytes(m, full)) / GiB, 35.4);
  EXPECT_LT(training_footprint_bytes(m, ckpt), training_footprint_bytes(m, full));
  // Full fine-tune state: 16 bytes per parameter on GPU (bf16 weight and grad, fp32 master, two moments).
  std::int64_t state = 0, weights = 0;
  for (const auto& u : layer_costs(m, full)) state += u.state_bytes, weights += u.weight_bytes;
  EXPECT_EQ(weights + state, 16 * llama_parameter_count(m));
}

// train.activation_offload: the per-layer input that checkpointing keeps (tokens x hidden x 2 bytes) leaves the
// device for pinned host memory; the recomputation's working set stays, plus the one input brought back early for the
// next layer's backward. Llama-3-8B at 128k tokens: 32 GiB moved, 1 GiB of it back at a time.
TEST(LayerCost, ActivationOffloadMovesTheLayerInputsToTheHost) {
  const auto m = llama3_8b();
  TrainSetup ckpt;
  ckpt.lora_r = 16;
  ckpt.seq_len = 128 * 1024;
  ckpt.activation_checkpointing = true;
  TrainSetup offload = ckpt;
  offload.activation_offload = true;
  const auto a = layer_costs(m, ckpt), b = layer_costs(m, offload);
  ASSERT_EQ(a.size(), b.size());
  std::int64_t host = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool layer = a[i].name.rfind("layer ", 0) == 0;
    EXPECT_EQ(b[i].activation_bytes, layer ? 0 : a[i].activation_bytes) << a[i].name;
    EXPECT_EQ(b[i].host_bytes, layer ? a[i].activation_bytes : 0) << a[i].name;
    EXPECT_EQ(b[i].working_bytes, a[i].working_bytes + (layer ? GiB : 0)) << a[i].name;
    host += b[i].host_bytes;
  }
  EXPECT_EQ(host, 32 * GiB);
  // The unfused head's working set (fp32 logits of 128k tokens) is the largest either way: all 32 GiB are saved.
  EXPECT_EQ(training_footprint_bytes(m, ckpt) - training_footprint_bytes(m, offload), 32 * GiB);
  // Without checkpointing nothing is offloaded; on the CPU the host is the device.
  TrainSetup plain = offload;
  plain.activation_checkpointing = false;
  for (const auto& u : layer_costs(m, plain)) EXPECT_EQ(u.host_bytes, 0) << u.name;
  offload.on_gpu = ckpt.on_gpu = false;
  EXPECT_EQ(training_footprint_bytes(m, offload), training_footprint_bytes(m, ckpt));
}

// A host cap (train.activation_offload_host_gib, or 80% of the host's available memory): the first layers' inputs in
// forward order go to the host while they fit, the others stay on the device, as the model's OffloadBudget decides.
// Llama-3-8B at 344,064 tokens: 2.625 GiB an input, pinned in three power-of-two pieces (core/pinned_bytes.h) that
// take exactly that; a 64 GiB cap offloads 24 of the 32.
TEST(LayerCost, AHostCapKeepsTheInputsPastItOnTheDevice) {
  const auto m = llama3_8b();
  TrainSetup s;
  s.lora_r = 16;
  s.seq_len = 344064;
  s.activation_checkpointing = true;
  s.activation_offload = true;
  const std::int64_t input = s.seq_len * m.hidden_size * 2;
  const std::int64_t uncapped = training_footprint_bytes(m, s);
  s.offload_host_bytes = 64 * GiB;
  std::int64_t host = 0, offloaded = 0, kept = 0;
  for (const auto& u : layer_costs(m, s)) {
    if (u.name.rfind("layer ", 0) != 0) continue;
    host += u.host_bytes;
    const int index = std::stoi(u.name.substr(6));
    if (u.host_bytes > 0) {
      ++offloaded;
      EXPECT_LT(index, 24) << u.name;
    } else {
      ++kept;
      EXPECT_EQ(u.activation_bytes, input) << u.name;
    }
  }
  EXPECT_EQ(offloaded, 24);
  EXPECT_EQ(kept, 8);
  EXPECT_EQ(host, 24 * input);
  EXPECT_EQ(training_footprint_bytes(m, s) - uncapped, 8 * input);
  // Uncapped, every input pins its pieces: 84 GiB (one power-of-two block an input pinned 128 GiB, which the
  // out-of-memory killer ended on a 125 GiB host).
  s.offload_host_bytes = std::numeric_limits<std::int64_t>::max();
  std::int64_t all = 0;
  for (const auto& u : layer_costs(m, s)) all += u.host_bytes;
  EXPECT_EQ(all, 84 * GiB);
  EXPECT_EQ(pinned_block_bytes(input), input);
  // The rule of the cap: an explicit GiB wins; else 80% of what is available, shared among the node's ranks.
  EXPECT_EQ(offload_host_budget(12.5, 0, 4), 25 * GiB / 2);
  EXPECT_EQ(offload_host_budget(0, 100 * GiB, 1), 80 * GiB);
  EXPECT_EQ(offload_host_budget(0, 100 * GiB, 4), 20 * GiB);
  EXPECT_EQ(offload_host_budget(0, UINT64_MAX, 2), std::numeric_limits<std::int64_t>::max());
}

// train.activation_checkpointing_layers: a layer that recomputes costs what it costs under activation checkpointing,
// one that does not what it costs without (its saved activations, no recomputation working set), in the pattern of the
// model's rule; the footprint grows as fewer layers recompute (down to a few: one recomputing layer's working set is
// about what keeping its activations costs). A run with some layers not recomputing that does not fit is offered
// every layer recomputing. Llama-3-8B QLoRA, 2 x 2048 tokens.
TEST(LayerCost, SomeLayersRecomputing) {
  const auto m = llama3_8b();
  TrainSetup none;
  none.lora_r = 16;
  none.nf4 = true;
  none.micro_batch = 2;
  none.fused_loss = true;
  TrainSetup all = none;
  all.activation_checkpointing = true;
  const std::vector<UnitCost> u_none = layer_costs(m, none), u_all = layer_costs(m, all);
  ASSERT_NE(u_none[1].activation_bytes, u_all[1].activation_bytes);
  std::int64_t smaller = training_footprint_bytes(m, all);
  for (const std::int64_t n : {24, 16, 8}) {
    SCOPED_TRACE(std::to_string(n) + " layers recompute");
    TrainSetup part = all;
    part.activation_checkpointing_layers = n;
    const std::vector<UnitCost> u = layer_costs(m, part);
    ASSERT_EQ(u.size(), u_all.size());
    int recomputing = 0;
    for (int i = 0; i < m.num_layers; ++i) {
      const UnitCost& want = activation_checkpointed_layer(i, m.num_layers, n) ? u_all[i + 1] : u_none[i + 1];
      recomputing += activation_checkpointed_layer(i, m.num_layers, n);
      EXPECT_EQ(u[i + 1].activation_bytes, want.activation_bytes) << u[i + 1].name;
      EXPECT_EQ(u[i + 1].working_bytes, want.working_bytes) << u[i + 1].name;
      EXPECT_EQ(u[i + 1].bytes(), want.bytes()) << u[i + 1].name;
    }
    EXPECT_EQ(recomputing, n);
    const std::int64_t footprint = training_footprint_bytes(m, part);
    EXPECT_GT(footprint, smaller);
    smaller = footprint;
  }
  EXPECT_LT(smaller, training_footprint_bytes(m, none));

  TrainSetup part = all;
  part.activation_checkpointing_layers = 4;
  const std::int64_t budget = (training_footprint_bytes(m, all) + training_footprint_bytes(m, part)) / 2;
  try {
    plan_balanced_for(m, part, {{0, budget}}, 1);
    FAIL() << "4 layers recomputing fit below its footprint";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(e.hint().find("--train.activation_checkpointing_layers=0 (every layer recomputes)"), std::string::npos)
        << e.hint();
  }
  EXPECT_NO_THROW(plan_balanced_for(m, all, {{0, budget}}, 1));

  // The fewest recomputing under a budget, counted down while it fits: 16 at the footprint of 16 (one more than 15's);
  // none below 31 when 31 does not fit; 1 when anything fits. Refused without checkpointing, the hint names them.
  auto within = [&m](std::int64_t budget) {
    return [&m, budget](const TrainSetup& s) { return training_footprint_bytes(m, s) <= budget; };
  };
  auto recomputing = [&all](std::int64_t n) {
    TrainSetup s = all;
    s.activation_checkpointing_layers = n;
    return s;
  };
  const std::int64_t just = training_footprint_bytes(m, recomputing(16));
  ASSERT_GT(training_footprint_bytes(m, recomputing(15)), just);
  EXPECT_EQ(fewest_recomputing_layers(m, none, within(just)), 16);
  EXPECT_EQ(fewest_recomputing_layers(m, all, within(training_footprint_bytes(m, recomputing(31)) - 1)), 0);
  EXPECT_EQ(fewest_recomputing_layers(m, all, within(std::numeric_limits<std::int64_t>::max())), 1);
  try {
    plan_balanced_for(m, none, {{0, just}}, 1);
    FAIL() << "no checkpointing fit below 16 layers recomputing";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(
        e.hint().rfind("any of: --train.activation_checkpointing=true --train.activation_checkpointing_layers=16 (" +
                           format_bytes(just) + " in total); --train.activation_checkpointing=true (",
                       0),
        0u)
        << e.hint();
  }
}

}  // namespace
}  // namespace ranktune
