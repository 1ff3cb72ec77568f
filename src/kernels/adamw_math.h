// defines: AdamWScalars and adamw_update, the element arithmetic of kernels/adamw.h, compiled for the host (the CPU
// path) and the device (adamw.cu). Written as torch's fused AdamW writes it (fused_adam_utils.cuh, ADAMW mode, fp32
// opmath), expression for expression, so that nvcc makes the same contractions and the results agree bit for bit.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define RANKTUNE_HD __host__ __device__ __forceinline__
#else
#define RANKTUNE_HD inline
#endif

namespace ranktune {

// The hyper-parameters in fp32, as torch's functor converts them, and the bias corrections of one step count.
struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay;
};

struct AdamWCorrections {
  float bias_correction1, bias_correction2_sqrt;
};

RANKTUNE_HD AdamWCorrections adamw_corrections(const AdamWScalars& s, float step) {
  const float bias_correction1 = 1 - powf(s.beta1, step);
  const float bias_correction2 = 1 - powf(s.beta2, step);
  return {bias_correction1, sqrtf(bias_correction2)};
}

// One element: `param` is the fp32 master, `grad` the gradient already widened to fp32.
RANKTUNE_HD void adamw_update(float grad, float& param, float& exp_avg, float& exp_avg_sq, const AdamWScalars& s,
                              const AdamWCorrections& c) {
  if (s.weight_decay != 0) param -= s.lr * s.weight_decay * param;
  exp_avg = fmaf(s.beta1, exp_avg, fmaf(-s.beta1, grad, grad));
  exp_avg_sq = fmaf(s.beta2, exp_avg_sq, fmaf(-s.beta2, grad * grad, grad * grad));
  const float step_size = s.lr / c.bias_correction1;
  const float denom = (sqrtf(exp_avg_sq) / c.bias_correction2_sqrt) + s.eps;
  param -= step_size * exp_avg / denom;
}

}  // namespace ranktune
