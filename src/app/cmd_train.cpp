// `ranktune train`: config -> topology -> mode -> communicator -> (model -> trainer, see issue #4).
#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/dist/agree.h"
#include "ranktune/dist/communicator.h"
#include "ranktune/dist/mpi_env.h"
#include "ranktune/dist/parallel_mode.h"
#include "ranktune/dist/topology_detect.h"
#include "ranktune/plan/layer_cost.h"

namespace ranktune {

int cmd_train(const AppContext& ctx) {
  log0() << "ranktune train: effective configuration\n" << config_table(ctx.cfg, ctx.request.values);
  const ClusterFacts facts = topology_detect(ctx.env, ctx.launch_env);
  ModeDecision mode;
  const std::int64_t footprint =
      training_footprint_bytes(model_shape_from(ctx.cfg.model), train_setup_from(ctx.cfg, ctx.cfg.device == "cuda"));
  ModeRequest req{ctx.cfg.parallel.mode, ctx.cfg.device, footprint, ctx.cfg.parallel.reserve_gib};
  agree_run(ctx.env, [&] { mode = mode_decide(facts, req); });
  log0() << topology_table(facts, mode);
  std::unique_ptr<Communicator> comm;
  agree_run(ctx.env, [&] { comm = communicator_create(ctx.env, mode, ctx.cfg.parallel.comm_timeout_s); });
  const auto& t = ctx.cfg.train;
  log0() << "global batch = micro_batch " << t.micro_batch << " x grad_accum " << t.grad_accum << " x world size "
         << ctx.env.size() << " = " << static_cast<long>(t.micro_batch) * t.grad_accum * ctx.env.size()
         << " sequences of " << t.seq_len << " tokens";
  agree_run(ctx.env, [] {
    throw UsageError("the training loop is not part of this build yet",
                     "`ranktune topology` checks the launch; training lands with the trainer (issue #4)");
  });
  return 0;
}

}  // namespace ranktune
