// defines: Trainer, the training loop of single-device and DDP runs: per step, each rank's micro-batches from the
// sampler, forward + summed token loss, backward with DDP buckets reduced during backward (GradSync), global-norm
// clipping, AdamW with the LR schedule, metrics and progress on rank 0, periodic evaluation on the held-out rows.
// The model knows nothing of MPI: ranks meet only through the Communicator and MpiEnv given here.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/model/llama.h"
#include "ranktune/train/token_data.h"

namespace ranktune {

class MpiEnv;
class Communicator;

struct TrainResult {
  long steps = 0;
  std::vector<double> losses;  // the global training loss of every step this run took
  double final_eval_loss = -1;
};

class Trainer {
 public:
  // `ddp`: gradients are averaged across the ranks of `comm` (world size 1 included).
  Trainer(const Config& cfg, const MpiEnv& env, Communicator& comm, bool ddp, Llama model, const TokenData& data);
  ~Trainer();
  TrainResult run();

 private:
  double evaluate();
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ranktune
