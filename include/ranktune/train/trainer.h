// defines: Trainer, the training loop of the three modes: per step, each rank's micro-batches from the sampler,
// forward + summed token loss, backward (DDP: buckets reduced during backward by GradSync; balanced: through the
// pipeline's stages), global-norm clipping, AdamW with the LR schedule, metrics and progress on rank 0, periodic
// evaluation on the held-out rows, checkpoints (every N steps, at the end, and when a stop signal is agreed at a step
// boundary) and resume. The model knows nothing of MPI: ranks meet only through the Communicator and MpiEnv given here.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/model/llama.h"
#include "ranktune/train/token_data.h"
#include "ranktune/train/train_checkpoint.h"

namespace ranktune {

class MpiEnv;
class Communicator;
class PipelineExecutor;
class Progress;
struct StepMetrics;

struct TrainResult {
  long first_step = 1;               // 1, or the step after the checkpoint this run resumed from
  long steps = 0;                    // the last step done
  std::vector<double> losses;        // the global training loss of every step this run took
  std::vector<double> stage_busy_s;  // balanced: seconds each stage's device computed (summed over the run)
  double step_seconds = 0;           // wall time of the steps, evaluations and saves left out (stage_busy_s's whole)
  std::vector<std::pair<int, double>> device_peak_gib;  // GPU runs: (CUDA index, peak GiB allocated over the run)
  double final_eval_loss = -1;
  bool stopped = false;  // a stop signal ended the run early (all ranks agreed)
  bool saved = false;    // ... and its checkpoint is committed
  std::string stop_reason;
};

class Trainer {
 public:
  // `mode`: ddp averages gradients across the ranks of `comm` (world size 1 included); balanced needs `pipeline`,
  // the model's stages already placed, through which forward and backward go (and only balanced takes one).
  // `base_identity` names the frozen base (checked when a LoRA run resumes). Resumes per cfg.resume before returning.
  Trainer(const Config& cfg, const MpiEnv& env, Communicator& comm, ParallelMode mode, Llama model,
          const TokenData& data, std::string base_identity, std::shared_ptr<PipelineExecutor> pipeline = nullptr);
  ~Trainer();
  TrainResult run();

 private:
  struct State;
  struct Launched;  // a step whose forward and backward are queued
  struct Updated;   // ... and its clipping and update: its loss and gradient norm on their way to the host
  // The phases of one step of run(), in order. With train.queue_ahead the next step's launch comes between a step's
  // update and its read, so the device holds queued work while the host reads, reports and agrees on stops.
  Launched launch(long step);        // the global batch's micro-batches: forward, summed token loss, backward
  Updated update(Launched&& done);   // gradient sync (DDP), clipping, AdamW; the position moves to this step
  StepMetrics read(Updated&& done);  // waits for the loss and the norm: the row's loss, lr, norm, tokens
  bool queue_ahead_after(long step, bool profiling_ends) const;  // may the step after `step` (1-based) launch early?
  void time_step(StepMetrics& row, double step_s, double elapsed_s, TrainResult& result);  // speed, MFU, memory
  void report(StepMetrics& row, TrainResult& result, Progress& progress);  // evaluation when due, metrics, progress
  // true: an agreed stop (its checkpoint attempted, with the generators of rng_at_boundary when a step was queued
  // ahead of the boundary).
  bool stop_or_save(long step, TrainResult& result, const RngBlobs* rng_at_boundary);
  void finish(TrainResult& result, Progress& progress);

  double evaluate();
  void resume();
  bool save(long step);  // collective; false when the save failed (training goes on)
  std::unique_ptr<State> s_;
};

}  // namespace ranktune
