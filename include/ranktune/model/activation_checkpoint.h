// defines: activation_checkpoint_forward, activation checkpointing (torchtitan's word; "recomputation") of one
// decoder layer: the forward keeps only the layer's input; backward runs the layer again with gradients on and
// back-propagates through that recomputation (re-entrant, as torch.utils.checkpoint(use_reentrant=True)). The RNG
// state of the input's device is saved before the forward and restored for the recomputation, so LoRA dropout draws
// the same mask twice. Parameter gradients accumulate exactly as without it (DDP's per-parameter hooks fire during the
// recomputed backward). With `offload` (train.activation_offload) the kept input waits in pinned host memory instead
// of on the device: copied out on a side stream in the forward, back on the compute stream before the recomputation.
// Not to be confused with a training checkpoint (io/) or an HF model directory (hf_model_dir.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>

#include "ranktune/model/block.h"
#include "ranktune/model/rope.h"

namespace ranktune {

// The most host memory the offloaded inputs may hold at once (train.activation_offload_host_gib; by default a share of
// the host's available memory): an input that would pass it stays on the device, checkpointed as without the offload,
// so a sequence whose inputs outgrow the host trains instead of meeting the out-of-memory killer. Shared by the
// inputs in flight, which give their bytes back when released; any thread.
class OffloadBudget {
 public:
  explicit OffloadBudget(std::int64_t max_bytes = std::numeric_limits<std::int64_t>::max()) : max_(max_bytes) {}
  // Reserves `bytes` if they fit under the cap; false (and a refusal counted) if not.
  bool take(std::int64_t bytes);
  void give(std::int64_t bytes) { held_ -= bytes; }
  std::int64_t held() const { return held_; }
  std::int64_t refused() const { return refused_; }  // inputs kept on the device for want of room, since the start

 private:
  const std::int64_t max_;
  std::atomic<std::int64_t> held_{0}, refused_{0};
};

// Same value as block->forward(x, rope, mask) (the mask, if any, is kept for the recomputation). When x does not
// require grad (a frozen embedding under LoRA), a detached copy that does is used, so gradients still reach the
// layer's trainable parameters. offload: x is kept on the host (a CPU x as a separate copy: nothing moves, but the
// same path runs); loss and gradients are bit-identical either way. budget: the cap on what offloaded inputs hold
// (none: no cap); an input over it is kept on the device.
at::Tensor activation_checkpoint_forward(DecoderBlockImpl& block, const at::Tensor& x, const RopeCache& rope,
                                         const at::Tensor& mask = {}, bool offload = false,
                                         const std::shared_ptr<OffloadBudget>& budget = nullptr);

}  // namespace ranktune
