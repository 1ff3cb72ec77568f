// defines: Trainer, the training loop of single-device and DDP runs: per step, each rank's micro-batches from the
// sampler, forward + summed token loss, backward with DDP buckets reduced during backward (GradSync), global-norm
// clipping, AdamW with the LR schedule, metrics and progress on rank 0, periodic evaluation on the held-out rows,
// checkpoints (every N steps, at the end, and when a stop signal is agreed at a step boundary) and resume.
// The model knows nothing of MPI: ranks meet only through the Communicator and MpiEnv given here.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <utility>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/model/llama.h"
#include "ranktune/train/token_data.h"

namespace ranktune {

class MpiEnv;
class Communicator;
class PipelineExecutor;

struct TrainResult {
  long first_step = 1;         // 1, or the step after the checkpoint this run resumed from
  long steps = 0;              // the last step done
  std::vector<double> losses;  // the global training loss of every step this run took
  std::vector<double> stage_busy_s;  // balanced: seconds each stage's device computed (summed over the run)
  double step_seconds = 0;           // wall time of the steps, evaluations and saves left out (stage_busy_s's whole)
  std::vector<std::pair<int, double>> device_peak_gib;  // GPU runs: (CUDA index, peak GiB allocated over the run)
  double final_eval_loss = -1;
  bool stopped = false;        // a stop signal ended the run early (all ranks agreed)
  bool saved = false;          // ... and its checkpoint is committed
  std::string stop_reason;
};

class Trainer {
 public:
  // `ddp`: gradients are averaged across the ranks of `comm` (world size 1 included). `base_identity` names the
  // frozen base (checked when a LoRA run resumes). `pipeline`: balanced mode, the model's stages already placed;
  // forward and backward go through it. Resumes per cfg.resume before returning.
  Trainer(const Config& cfg, const MpiEnv& env, Communicator& comm, bool ddp, Llama model, const TokenData& data,
          std::string base_identity, std::shared_ptr<PipelineExecutor> pipeline = nullptr);
  ~Trainer();
  TrainResult run();

 private:
  double evaluate();
  void resume();
  bool save(long step);  // collective; false when the save failed (training goes on)
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ranktune
