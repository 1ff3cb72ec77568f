// defines: adamw_master_step, one AdamW update of bf16/fp16 parameters that carry fp32 master weights, in one pass per
// tensor: it reads the low-precision gradient, updates the fp32 master and both moments, and writes the rounded
// parameter. The reference it replaces (train/optimizer.cpp, train.adamw_one_pass=false) makes an fp32 copy of every
// gradient, runs at::_fused_adamw_ on the masters and copies the masters back into the parameters: three passes and
// 40 bytes of memory traffic a parameter where this one moves 28. The update is the arithmetic of torch's fused
// AdamW kernel (ATen/native/cuda/fused_adam_utils.cuh, ADAMW mode: fp32 math, the moments through fma), so on a GPU the
// master and moments equal the reference's; on the CPU the same element function runs over threads.
//
//   at::_foreach_add_(steps, 1);   // the step counts are incremented first, as torch does
//   adamw_master_step(params, grads, masters, exp_avgs, exp_avg_sqs, steps, {lr, 0.9, 0.999, 1e-8, 0.01}, clip_coef);
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

struct AdamWHyper {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

// Every list has one entry per parameter: params and grads bf16 or fp16 (the same dtype a pair), masters, exp_avgs and
// exp_avg_sqs fp32 of the parameter's shape, steps fp32 scalars holding the count of this update (>= 1); all
// contiguous and on the parameter's device. Throws LibraryError naming the entry otherwise.
// grad_scale (gradient clipping's coefficient): undefined, or a one-element fp32 tensor on the parameters' device by
// which each gradient is multiplied as it is read, rounded to the gradient's dtype exactly as `grad.mul_(grad_scale)`
// leaves it on that device (on a GPU ATen rounds the scale to the gradient's dtype before the product, on the CPU it
// does not), so that the clipping pass over the gradients is saved and the result is unchanged bit for bit.
void adamw_master_step(at::TensorList params, at::TensorList grads, at::TensorList masters, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList steps, const AdamWHyper& hyper,
                       const at::Tensor& grad_scale = {});

}  // namespace ranktune
