// Argument checks and the device dispatch of adamw_master_step: CUDA tensors go to adamw.cu, CPU tensors run the same
// element function (adamw_math.h) over the rank's intra-op threads.
#include "ranktune/kernels/adamw.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <string>

#include "adamw_math.h"
#include "ranktune/core/error.h"
#include "ranktune/core/parallel_range.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "adamw_cuda.h"
#endif

namespace ranktune {
namespace {

void check(bool ok, std::size_t i, const std::string& what) {
  if (!ok) throw LibraryError("adamw_master_step: entry " + std::to_string(i) + ": " + what);
}

// scale: as the CUDA kernel's, but not rounded to T first (ATen's CPU mul_ by a scalar tensor keeps it in fp32).
template <class T>
void step_cpu(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& master, const at::Tensor& exp_avg,
              const at::Tensor& exp_avg_sq, const AdamWScalars& s, const AdamWCorrections& c, bool scaled,
              float scale) {
  T* p = param.data_ptr<T>();
  const T* g = grad.data_ptr<T>();
  float* w = master.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  parallel_range(param.numel(), 1 << 16, at::get_num_threads(), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float gf = scaled ? static_cast<float>(static_cast<T>(static_cast<float>(g[i]) * scale))
                              : static_cast<float>(g[i]);
      adamw_update(gf, w[i], m[i], v[i], s, c);
      p[i] = static_cast<T>(w[i]);
    }
  });
}

}  // namespace

void adamw_master_step(at::TensorList params, at::TensorList grads, at::TensorList masters, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList steps, const AdamWHyper& hyper,
                       const at::Tensor& grad_scale) {
  const std::size_t n = params.size();
  if (grads.size() != n || masters.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n || steps.size() != n)
    throw LibraryError("adamw_master_step: the six tensor lists differ in length");
  const AdamWScalars s{static_cast<float>(hyper.lr), static_cast<float>(hyper.beta1), static_cast<float>(hyper.beta2),
                       static_cast<float>(hyper.eps), static_cast<float>(hyper.weight_decay)};
  const bool scaled = grad_scale.defined();
  if (scaled && (grad_scale.scalar_type() != at::kFloat || grad_scale.numel() != 1 || !grad_scale.is_contiguous()))
    throw LibraryError("adamw_master_step: grad_scale must be one contiguous fp32 value");
  // The CPU path reads the scale once (a GPU's kernels read it on the device).
  const float scale = scaled && grad_scale.is_cpu() ? grad_scale.item<float>() : 1.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const at::Tensor &p = params[i], &g = grads[i];
    const auto low = p.scalar_type() == at::kBFloat16 || p.scalar_type() == at::kHalf;
    check(low && g.scalar_type() == p.scalar_type(), i, "parameter and gradient must be both bf16 or both fp16");
    for (const at::Tensor* t : {&masters[i], &exp_avgs[i], &exp_avg_sqs[i]})
      check(t->scalar_type() == at::kFloat && t->sizes() == p.sizes(), i,
            "master and moments must be fp32 of the parameter's shape");
    check(g.sizes() == p.sizes(), i, "gradient shape differs from the parameter's");
    check(steps[i].scalar_type() == at::kFloat && steps[i].numel() == 1, i, "the step count must be one fp32 value");
    for (const at::Tensor* t : {&p, &g, &masters[i], &exp_avgs[i], &exp_avg_sqs[i], &steps[i]}) {
      check(t->is_contiguous(), i, "tensors must be contiguous");
      check(t->device() == p.device(), i, "tensors must be on the parameter's device");
    }
    check(!scaled || grad_scale.device() == p.device(), i, "grad_scale must be on the parameter's device");
#ifdef RANKTUNE_HAVE_CUDA
    if (p.is_cuda()) {
      adamw_master_step_cuda(p, g, masters[i], exp_avgs[i], exp_avg_sqs[i], steps[i], s,
                             scaled ? grad_scale.data_ptr<float>() : nullptr);
      continue;
    }
#endif
    check(p.is_cpu(), i, "tensors must be on the CPU or a CUDA device");
    const AdamWCorrections c = adamw_corrections(s, steps[i].item<float>());
    if (p.scalar_type() == at::kBFloat16)
      step_cpu<c10::BFloat16>(p, g, masters[i], exp_avgs[i], exp_avg_sqs[i], s, c, scaled, scale);
    else step_cpu<c10::Half>(p, g, masters[i], exp_avgs[i], exp_avg_sqs[i], s, c, scaled, scale);
  }
}

}  // namespace ranktune
