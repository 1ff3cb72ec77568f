#include "ranktune/train/batch_plan.h"

#include <cmath>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"

namespace ranktune {

std::string BatchPlan::describe() const {
  return "global batch " + std::to_string(global_batch()) + " = micro batch " + std::to_string(micro_batch) +
         " x grad_accum " + std::to_string(grad_accum) + " x world size " + std::to_string(world_size) + " (" +
         std::to_string(tokens_per_step()) + " tokens per step)";
}

BatchPlan batch_plan_from_config(const TrainConfig& t, int world_size) {
  return BatchPlan{t.micro_batch, t.grad_accum, world_size, t.seq_len};
}

double token_loss_scale(long global_loss_tokens, int world_size) {
  if (global_loss_tokens <= 0)
    throw UsageError("a training step has no loss-bearing tokens on any rank",
                     "every sample is fully masked: check the prompt masking of the dataset (ranktune prepare)");
  return static_cast<double>(world_size) / static_cast<double>(global_loss_tokens);
}

long steps_for_epochs(const BatchPlan& plan, double epochs, long train_rows) {
  const long global_rows = plan.global_batch();
  const long per_epoch = train_rows / global_rows;
  if (per_epoch == 0)
    throw ConfigError("one epoch (" + std::to_string(train_rows) +
                          " training rows) is smaller than one global batch (" + std::to_string(global_rows) + " rows)",
                      "lower train.micro_batch or train.grad_accum, or give more data");
  return static_cast<long>(std::ceil(epochs * static_cast<double>(per_epoch)));
}

}  // namespace ranktune
