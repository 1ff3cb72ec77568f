// defines: the gradient helpers of a training step: grad_norm / clip_grad_norm (global L2 norm over all trainable
// gradients, clipped as torch.nn.utils.clip_grad_norm_ does) and zero_grads (in place, once per optimizer step).
// Under DDP call them after GradSync::finish(): gradients are averaged by then, so every rank computes the same norm
// and clips identically without another collective. Parameters may live on several devices (balanced mode).
#pragma once

#include "ranktune/distributed/named_tensors.h"

namespace ranktune {

// Global L2 norm of the gradients of `params` (those without a gradient count as zero), accumulated in fp32.
double grad_norm(const NamedTensors& params);

// Scales every gradient by min(1, max_norm / (norm + 1e-6)) and returns the norm before clipping (what gets logged).
// max_norm <= 0 only measures. A non-finite norm is returned as is; the gradients are then scaled by NaN, as torch.
double clip_grad_norm(const NamedTensors& params, double max_norm);

// clip_grad_norm's norm as a 0-dim fp32 tensor on the gradients' (first) device (max_norm <= 0: only measured), read
// by the caller when it suits it: the training step reads it after the optimizer's kernels are queued, so the GPU
// never idles on a host sync in between.
at::Tensor clip_grad_norm_tensor(const NamedTensors& params, double max_norm);

// Zeroes gradients in place instead of dropping them: DDP's gradients are views into its buckets and must stay so,
// and accumulation over micro-steps needs a defined gradient to add into.
void zero_grads(const NamedTensors& params);

}  // namespace ranktune
