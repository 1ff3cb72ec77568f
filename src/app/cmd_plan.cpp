// `ranktune plan`: the balanced placement of the configured model over this node's GPUs (or over the budgets given
// with --parallel.max_memory, which needs no GPU), printed before any weight is loaded, next to what accelerate's
// device_map="balanced" would have done.
#include <map>
#include <sstream>

#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/dist/agree.h"
#include "ranktune/dist/mpi_env.h"
#include "ranktune/dist/topology_detect.h"
#include "ranktune/plan/accelerate_balanced.h"
#include "ranktune/plan/balanced_plan.h"

namespace ranktune {
namespace {

std::vector<DeviceBudget> budgets_from_gpus(const RankFacts& r, double reserve_gib) {
  if (r.gpus.empty())
    throw NoGpuError("no GPU visible to plan for (" + r.cuda_status_text + ")",
                     "give budgets for the GPUs you plan to use: --parallel.max_memory=0:80GiB,1:80GiB");
  const auto reserve = static_cast<std::int64_t>(reserve_gib * 1024 * 1024 * 1024);
  std::vector<DeviceBudget> out;
  for (const auto& g : r.gpus)
    out.push_back({g.index, (g.free_bytes >= 0 ? g.free_bytes : g.total_bytes) - reserve});
  return out;
}

// Share of the work done by the slowest device under a given unit -> device assignment.
double slowest_share(const std::vector<UnitCost>& units, const std::vector<int>& device_of_unit) {
  std::map<int, double> per;
  double total = 0;
  for (std::size_t i = 0; i < units.size(); ++i) per[device_of_unit[i]] += units[i].flops, total += units[i].flops;
  double worst = 0;
  for (const auto& [d, f] : per) worst = std::max(worst, f);
  return total > 0 ? worst / total : 1.0;
}

}  // namespace

int cmd_plan(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  std::vector<DeviceBudget> devices;
  const bool on_gpu = cfg.device == "cuda";
  agree_run(ctx.env, [&] {
    devices = !cfg.parallel.max_memory.empty()
                  ? parse_memory_budgets(cfg.parallel.max_memory)
                  : budgets_from_gpus(topology_local_facts(ctx.env, ctx.launch_env), cfg.parallel.reserve_gib);
  });
  const ModelShape shape = configured_model_shape(cfg);
  const TrainSetup setup = train_setup_from(cfg, on_gpu);
  BalancedPlan plan;
  agree_run(ctx.env, [&] { plan = plan_balanced_for(shape, setup, devices, cfg.parallel.micro_batches); });

  std::ostringstream head;
  head << "model: " << shape.layers << " layers, d " << shape.hidden << ", " << shape.total_params() / 1e6
       << "M parameters" << (shape.tied ? " (tied head)" : "") << "; "
       << (setup.lora_r ? "LoRA r=" + std::to_string(setup.lora_r) : std::string("full fine-tune")) << ", micro-batch "
       << setup.micro_batch << " x " << setup.seq_len << " tokens"
       << (setup.activation_checkpointing ? ", activation checkpointing" : "") << "; training footprint on one device "
       << format_bytes(training_footprint_bytes(shape, setup));
  log0() << head.str();
  log0() << "\nranktune balanced plan (weights + gradients + optimizer state + activations; time share from FLOPs):\n"
         << plan_table(plan);

  const AccelerateAssignment acc = accelerate_balanced_map(shape, on_gpu ? 2 : 4, devices);
  std::vector<int> ours(plan.units.size());
  for (const auto& s : plan.stages)
    for (int i = s.first; i <= s.last; ++i) ours[i] = s.device;
  std::vector<int> theirs;
  for (int d : acc.device_of_unit) theirs.push_back(d < 0 ? -1 : devices[d].device);
  char cmp[200];
  std::snprintf(cmp, sizeof cmp, "slowest device does %.0f%% of the work with accelerate's placement, %.0f%% with ours",
                100 * slowest_share(plan.units, theirs), 100 * slowest_share(plan.units, ours));
  log0() << "\naccelerate device_map=\"balanced\" (weights only) would place:\n"
         << accelerate_table(shape, acc, devices) << cmp;
  return 0;
}

}  // namespace ranktune
