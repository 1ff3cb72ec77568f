// defines: BatchPlan, the batch arithmetic of a run (global batch = micro batch x grad_accum x world size) and the
// loss scaling that makes gradient accumulation and DDP averaging equal to one big batch. Pure: no torch, no MPI.
#pragma once

#include <string>

namespace ranktune {

struct TrainConfig;

struct BatchPlan {
  int micro_batch = 1;  // sequences per micro-batch on one rank
  int grad_accum = 1;   // micro-batches per optimizer step
  int world_size = 1;   // DDP ranks, each with its own slice of the global batch
  int seq_len = 1;

  long global_batch() const { return static_cast<long>(micro_batch) * grad_accum * world_size; }
  long tokens_per_step() const { return global_batch() * seq_len; }
  bool last_micro_step(int micro) const { return micro + 1 == grad_accum; }

  // For a loss that is a mean over a micro-batch of equal-sized samples: multiply it by this before backward.
  // Local gradients then sum to the mean over this rank's micro-batches; DDP's average does the rest.
  double mean_loss_scale() const { return 1.0 / grad_accum; }

  // "global batch 64 = micro batch 8 x grad_accum 2 x world size 4 (8192 tokens per step)"
  std::string describe() const;
};

BatchPlan batch_plan_from_config(const TrainConfig& t, int world_size);

// For a loss *summed* over the loss-bearing tokens of one micro-batch (prompt masking makes micro-batches unequal):
// the factor that makes the accumulated, rank-averaged gradient the gradient of the mean over the whole global batch.
// `global_loss_tokens` counts loss tokens over all ranks and micro-steps of the step (all-reduce it first); the
// world size undoes the 1/N of DDP's average.
double token_loss_scale(long global_loss_tokens, int world_size);

// train.epochs as optimizer steps: ceil(epochs x the global batches one pass over `train_rows` holds), the incomplete
// last global batch of an epoch left out as the sampler does. ConfigError when one epoch is smaller than one global
// batch.
long steps_for_epochs(const BatchPlan& plan, double epochs, long train_rows);

}  // namespace ranktune
