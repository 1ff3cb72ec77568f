// `ranktune plan`: the balanced placement of the configured model over this node's GPUs (or over the budgets given
// with --parallel.max_memory, which needs no GPU), printed before any weight is loaded, next to what accelerate's
// device_map="balanced" would have done.
#include <map>
#include <sstream>

#include "ranktune/app/balanced_setup.h"
#include "ranktune/app/commands.h"
#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/log.h"
#include "ranktune/core/text.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/topology_detect.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/plan/accelerate_balanced.h"
#include "ranktune/plan/balanced_plan.h"

namespace ranktune {
namespace {

// Share of the work done by the slowest device under a given unit -> device assignment.
double slowest_share(const std::vector<UnitCost>& units, const std::vector<int>& device_of_unit) {
  std::map<int, double> per;
  double total = 0;
  for (std::size_t i = 0; i < units.size(); ++i) per[device_of_unit[i]] += units[i].flops, total += units[i].flops;
  double worst = 0;
  for (const auto& [d, f] : per) worst = std::max(worst, f);
  return total > 0 ? worst / total : 1.0;
}

// The one-device footprint with every layer recomputing, three quarters, half, a quarter and none: what
// train.activation_checkpointing_layers trades (each layer left out recomputes nothing and keeps its activations).
std::string activation_checkpointing_choices(const LlamaConfig& shape, const TrainSetup& setup,
                                             const std::vector<DeviceBudget>& devices) {
  const std::int64_t layers = shape.num_layers;
  const std::int64_t chosen = activation_checkpointed_count(layers, setup.activation_checkpointing_layers);
  std::ostringstream os;
  os << "activation checkpointing: " << chosen << " of " << layers
     << " layers recompute; the footprint on one device by --train.activation_checkpointing_layers:";
  std::int64_t last = -1;
  for (const std::int64_t n : {layers, layers * 3 / 4, layers / 2, layers / 4}) {
    if (n == last || n == 0) continue;
    last = n;
    TrainSetup s = setup;
    s.activation_checkpointing_layers = n;
    os << (n == layers ? " 0 (every layer) " : ", " + std::to_string(n) + " ")
       << format_bytes(training_footprint_bytes(shape, s));
  }
  TrainSetup off = setup;
  off.activation_checkpointing = false;
  off.activation_checkpointing_layers = 0;
  os << "; --train.activation_checkpointing=false " << format_bytes(training_footprint_bytes(shape, off));
  // On one device: what its budget holds, checkpointing off or the fewest layers recomputing.
  if (devices.size() == 1) {
    const std::int64_t budget = devices.front().bytes;
    auto fits = [&](const TrainSetup& s) { return training_footprint_bytes(shape, s) <= budget; };
    os << "; within the budget of " << format_bytes(budget) << ": ";
    if (fits(off)) os << "--train.activation_checkpointing=false";
    else if (const std::int64_t n = fewest_recomputing_layers(shape, setup, fits); n > 0)
      os << "--train.activation_checkpointing_layers=" << n << " at the fewest";
    else os << "every layer recomputing";
  }
  return os.str();
}

}  // namespace

int cmd_plan(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  const bool on_gpu = cfg.device != "cpu";  // auto too: a plan places GPUs (without one: --parallel.max_memory)
  BalancedSetup placed;
  agree_run(ctx.env, [&] {
    config_validate_for_layers(cfg, configured_model_shape(cfg).num_layers);
    const std::vector<GpuInfo> gpus = on_gpu && cfg.parallel.max_memory.empty()
                                          ? topology_local_facts(ctx.env, ctx.launch_env).gpus
                                          : std::vector<GpuInfo>{};
    placed = balanced_setup(cfg, gpus, on_gpu);
  });
  const std::vector<DeviceBudget>& devices = placed.devices;
  const BalancedPlan& plan = placed.plan;
  const LlamaConfig shape = configured_model_shape(cfg);
  const TrainSetup setup = train_setup_from(cfg, on_gpu);

  std::ostringstream head;
  head << "model: " << shape.num_layers << " layers, d " << shape.hidden_size << ", "
       << static_cast<double>(llama_parameter_count(shape)) / 1e6 << "M parameters"
       << (shape.tie_word_embeddings ? " (tied head)" : "") << "; "
       << (setup.lora_r ? "LoRA r=" + std::to_string(setup.lora_r) : std::string("full fine-tune"))
       << (setup.nf4 || shape.bnb_nf4 ? " on a 4-bit NF4 base" : "") << ", micro-batch " << setup.micro_batch << " x "
       << setup.seq_len << " tokens" << (setup.activation_checkpointing ? ", activation checkpointing" : "")
       << "; training footprint on one device " << format_bytes(training_footprint_bytes(shape, setup));
  log0() << head.str();
  if (setup.activation_checkpointing) log0() << activation_checkpointing_choices(shape, setup, devices);
  log0() << "\nranktune balanced plan (weights + gradients + optimizer state + activations; time share from FLOPs):\n"
         << plan_table(plan, balanced_stage_labels(placed));

  const AccelerateAssignment acc = accelerate_balanced_map(shape, on_gpu ? 2 : 4, devices);
  std::vector<int> ours(plan.units.size());
  for (std::size_t k = 0; k < plan.stages.size(); ++k)
    for (int i = plan.stages[k].first; i <= plan.stages[k].last; ++i) ours[i] = placed.stage_device[k];
  std::vector<int> theirs;
  for (int d : acc.device_of_unit) theirs.push_back(d < 0 ? -1 : devices[d].device);
  char cmp[200];
  std::snprintf(cmp, sizeof cmp, "slowest device does %.0f%% of the work with accelerate's placement, %.0f%% with ours",
                100 * slowest_share(plan.units, theirs), 100 * slowest_share(plan.units, ours));
  log0() << "\naccelerate device_map=\"balanced\" (weights only"
         << (setup.nf4 || shape.bnb_nf4 ? ", counted in 16 bits: the 4-bit sizes are not modelled" : "")
         << ") would place:\n"
         << accelerate_table(shape, acc, devices) << cmp;
  return 0;
}

}  // namespace ranktune
