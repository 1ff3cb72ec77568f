// defines: DeviceBudget (+ parse_memory_budgets), Stage, BalancedPlan and plan_balanced, the contiguous partition of
// the model's units over devices that minimises the slowest stage subject to each device's memory, counting full
// training memory (weights, gradients, optimizer state, activations), not weights alone. Pure and exact (dynamic
// programming over unit boundaries); plan_table prints what `ranktune plan` shows before any weight is loaded.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ranktune/plan/layer_cost.h"

namespace ranktune {

struct DeviceBudget {
  int device = 0;
  std::int64_t bytes = 0;
};

// "0:70GiB,1:75GiB" (units B, KB, MB, GB, KiB, MiB, GiB, TiB; decimals allowed). Throws ConfigError naming the entry.
std::vector<DeviceBudget> parse_memory_budgets(const std::string& spec);
std::int64_t parse_bytes(const std::string& text);

struct Stage {
  int device = 0;
  int first = 0, last = -1;  // unit indices, inclusive; first > last means an empty stage
  std::int64_t bytes = 0;
  std::int64_t budget = 0;
  double flops = 0;
  bool empty() const { return first > last; }
};

struct BalancedPlan {
  std::vector<UnitCost> units;
  std::vector<Stage> stages;
  int micro_batches = 1;
  double total_flops() const;
  double bottleneck_flops() const;
  // Step time relative to running every unit on one device: naive sequential execution is 1.0 by construction
  // (one device busy at a time); GPipe with m micro-batches is (sum + (m-1) * max) / (m * sum) in this model.
  double predicted_time_fraction() const;
  double predicted_speedup_over_sequential() const { return 1.0 / predicted_time_fraction(); }
};

struct PlanRequest {
  std::vector<UnitCost> units;
  std::vector<DeviceBudget> devices;
  int micro_batches = 1;
  // A tied lm_head's replica (already in the head unit's bytes) is dropped when the head shares a stage with the
  // embedding.
  std::int64_t tied_replica_bytes = 0;
};

// Throws OutOfMemoryError with the bytes needed per device when no placement fits.
BalancedPlan plan_balanced(const PlanRequest& req);

// The same request for a model described by its LlamaConfig: adds what to change (LoRA, activation checkpointing, a
// smaller micro-batch, more GPUs, with the resulting sizes) to the error when it does not fit.
BalancedPlan plan_balanced_for(const LlamaConfig& model, const TrainSetup& setup,
                               const std::vector<DeviceBudget>& devices, int micro_batches);

// The changes that make a training setup smaller, each as the option a user types and the setup it gives: LoRA (for
// a full fine-tune), QLoRA (a 16-bit base), activation checkpointing, the tiled MLP (a GPU, sequences over 8192
// tokens), half the micro-batch. plan_balanced_for's refusal lists those that fit; a run out of memory lists them all
// with their footprints.
struct PlanVariant {
  std::string option;
  TrainSetup setup;
};
std::vector<PlanVariant> plan_variants(const LlamaConfig& model, const TrainSetup& setup);

// The fewest layers recomputing (train.activation_checkpointing_layers, with activation checkpointing) for which
// `fits` holds, counted down from L - 1 while it does (the footprint grows as fewer recompute); 0 when L - 1 does not
// fit.
std::int64_t fewest_recomputing_layers(const LlamaConfig& model, const TrainSetup& setup,
                                       const std::function<bool(const TrainSetup&)>& fits);

// The hint that offers `ways` (variants with their footprints): "any of: A; B; or LAST", or LAST alone.
std::string plan_ways_hint(const std::vector<std::string>& ways, const std::string& last);

// One row per stage; `labels` name each stage's device (default "cuda:<stage device>").
std::string plan_table(const BalancedPlan& plan, const std::vector<std::string>& labels = {});

}  // namespace ranktune
