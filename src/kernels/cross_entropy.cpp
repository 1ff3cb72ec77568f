// The device dispatch and the ATen reference of cross_entropy_rows_.
#include "ranktune/kernels/cross_entropy.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "cross_entropy_cuda.h"
#endif

namespace ranktune {
namespace {

void check_inputs(const at::Tensor& logits, const at::Tensor& targets) {
  if (logits.dim() != 2 || logits.stride(1) != 1)
    throw LibraryError("cross_entropy_rows_: logits must be [rows, vocab] with unit last stride");
  if (targets.dim() != 1 || targets.size(0) != logits.size(0) || targets.scalar_type() != at::kLong ||
      targets.device() != logits.device())
    throw LibraryError("cross_entropy_rows_: targets must be int64 [rows] on the logits' device");
}

// The reference on checked inputs.
at::Tensor reference(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index, bool grad) {
  // All rows are computed, ignored ones included, so the pass never waits for the device to learn which rows count.
  at::Tensor z = logits.to(at::kFloat);  // logits itself when they are fp32: updated in place below
  const at::Tensor valid = targets != ignore_index;
  const at::Tensor safe = at::where(valid, targets, at::zeros({}, targets.options())).unsqueeze(1);
  const at::Tensor lse = at::logsumexp(z, 1, /*keepdim=*/true);
  const at::Tensor picked = z.gather(1, safe);
  at::Tensor loss = at::where(valid, (lse - picked).squeeze(1), at::zeros({}, z.options()));
  if (grad) {
    z.sub_(lse).exp_();
    z.scatter_add_(1, safe, at::full({z.size(0), 1}, -1.0, z.options()));
    z.mul_(valid.unsqueeze(1));
    if (!z.is_same(logits)) logits.copy_(z);
  }
  return loss;
}

}  // namespace

at::Tensor cross_entropy_rows_reference_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index,
                                         bool grad) {
  check_inputs(logits, targets);
  return reference(logits, targets, ignore_index, grad);
}

at::Tensor cross_entropy_rows_(at::Tensor& logits, const at::Tensor& targets, std::int64_t ignore_index, bool grad) {
  check_inputs(logits, targets);
#ifdef RANKTUNE_HAVE_CUDA
  if (logits.is_cuda()) return cross_entropy_rows_cuda_(logits, targets, ignore_index, grad);
#endif
  return reference(logits, targets, ignore_index, grad);
}

}  // namespace ranktune
