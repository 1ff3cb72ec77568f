// defines: what a training run puts into a checkpoint and takes back on resume (RunPosition, train_state_capture,
// train_state_restore). Trainable weights and optimizer state (moments, step counts, fp32 masters) are replicated in
// DDP, so rank 0 alone writes them; every rank writes its RNG state and the run position. A LoRA checkpoint records
// the base model's identity and refuses to resume on another base.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "ranktune/data/sampler.h"
#include "ranktune/io/checkpoint.h"
#include "ranktune/train/optimizer.h"

namespace ranktune {

struct RunPosition {
  long step = 0;          // optimizer steps done
  long tokens = 0;        // tokens trained on, all ranks
  SamplerCursor cursor;   // where the data order continues
};

CheckpointState train_state_capture(const NamedTensors& params, const AdamW& opt, const RunPosition& pos,
                                    bool write_replicated, const std::string& base_identity);

// Copies the saved weights and optimizer state into params/opt (they must match by name and shape: a mismatch is a
// CheckpointError naming the tensor), restores this rank's RNG when its own file exists, returns the position.
RunPosition train_state_restore(const LoadedCheckpoint& ck, const NamedTensors& params, AdamW& opt,
                                const std::string& base_identity, bool require_same_base);

}  // namespace ranktune
