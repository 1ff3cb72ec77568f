// defines: the gradient helpers of a training step: grad_norm / clip_grad_norm (global L2 norm over all trainable
// gradients, clipped as torch.nn.utils.clip_grad_norm_ does), zero_grads (in place) and release_grads (dropped), once
// per optimizer step.
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

// The global norm alone (grad_norm's, as a 0-dim fp32 tensor, not read), and the coefficient clip_grad_norm
// multiplies by, min(1, max_norm / (norm + 1e-6)), on norm's device: the trainer hands it to AdamW::step, whose
// one-pass kernel folds it into its read of the gradients instead of a pass of its own.
at::Tensor grad_norm_tensor(const NamedTensors& params);
at::Tensor clip_coefficient(const at::Tensor& norm, double max_norm);

// Zeroes gradients in place: DDP's gradients are views into its buckets and must stay so.
void zero_grads(const NamedTensors& params);

// Drops the gradients (torch's zero_grad(set_to_none=True)): the next backward's AccumulateGrad takes each new
// gradient as it is instead of adding it into a zeroed one (a read and a write of every gradient saved), and the
// memory is free between steps. Single and balanced modes; DDP zeroes its bucket views instead.
void release_grads(const NamedTensors& params);

}  // namespace ranktune
