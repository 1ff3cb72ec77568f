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

#include "ranktune/model/block.h"
#include "ranktune/model/rope.h"

namespace ranktune {

// Same value as block->forward(x, rope, mask) (the mask, if any, is kept for the recomputation). When x does not
// require grad (a frozen embedding under LoRA), a detached copy that does is used, so gradients still reach the
// layer's trainable parameters. offload: x is kept on the host (a CPU x as a separate copy: nothing moves, but the
// same path runs); loss and gradients are bit-identical either way.
at::Tensor activation_checkpoint_forward(DecoderBlockImpl& block, const at::Tensor& x, const RopeCache& rope,
                                         const at::Tensor& mask = {}, bool offload = false);

}  // namespace ranktune
