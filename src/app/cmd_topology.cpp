// `ranktune topology`: every rank's host, GPU and device, the mode that would run and why, and a live check of the
// communicator that mode uses (one all-reduce across all ranks).
#include <ATen/ATen.h>

#include <chrono>

#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/distributed/topology_detect.h"
#include "ranktune/plan/layer_cost.h"

namespace ranktune {

int cmd_topology(const AppContext& ctx) {
  const ClusterFacts facts = topology_detect(ctx.env, ctx.launch_env);
  ModeDecision mode;
  agree_run(ctx.env, [&] {
    const bool on_gpu = device_resolve(ctx.cfg.device, facts) == "cuda";
    const std::int64_t footprint =
        training_footprint_bytes(configured_model_shape(ctx.cfg), train_setup_from(ctx.cfg, on_gpu));
    mode =
        mode_decide(facts, ModeRequest{ctx.cfg.parallel.mode, ctx.cfg.device, footprint, ctx.cfg.parallel.reserve_gib});
  });
  log0() << topology_table(facts, mode);
  log0() << "cpu:    " << ctx.cpu_threads.describe();

  std::unique_ptr<Communicator> comm;
  agree_run(ctx.env, [&] { comm = communicator_create(ctx.env, mode, ctx.cfg.parallel.comm_timeout_s); });
  const auto device = mode.on_gpu
                          ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(mode.device_of_rank.at(ctx.env.rank())))
                          : at::Device(at::kCPU);
  const auto start = std::chrono::steady_clock::now();
  at::Tensor probe =
      at::full({1 << 18}, static_cast<double>(ctx.env.rank() + 1), at::TensorOptions(device).dtype(at::kFloat));
  comm->all_reduce(probe, ReduceOp::sum);
  comm->synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double want = ctx.env.size() * (ctx.env.size() + 1) / 2.0;
  const bool ok = probe.to(at::kCPU).eq(want).all().item<bool>();
  agree_run(ctx.env, [&] {
    if (!ok)
      throw CommError(comm->name() + " all-reduce returned a wrong sum on rank " + std::to_string(ctx.env.rank()));
  });
  log0() << "check:  " << comm->name() << " all-reduce of 1 MiB across " << ctx.env.size() << " rank(s): correct, "
         << static_cast<long>(ms) << " ms";
  return 0;
}

}  // namespace ranktune
