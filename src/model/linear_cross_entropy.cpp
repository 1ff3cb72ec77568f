#include "ranktune/model/linear_cross_entropy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>

#include <algorithm>

#include "ranktune/kernels/cross_entropy.h"
#include "ranktune/model/loss.h"

namespace ranktune {
namespace {

struct ChunkedResult {
  at::Tensor loss;  // fp32 scalar
  at::Tensor dh;    // [N, d] in hidden's dtype, at unit grad; undefined unless asked for
  at::Tensor dw;    // [V, d] fp32, at unit grad; undefined unless asked for
};

// dW += dl^T h in fp32. A 16-bit product is formed in its inputs' dtype, then widened by the add: the same ops on
// every device. (CUDA's addmm with an fp32 output would skip that rounding; it waits for a GPU run to verify it.)
void accumulate_dw(at::Tensor& dw, const at::Tensor& dl, const at::Tensor& h) {
  if (dl.scalar_type() == at::kFloat) {
    dw.addmm_(dl.t(), h);
  } else {
    dw.add_(at::mm(dl.t(), h));
  }
}

// hidden [N, d], weight [V, d], targets [N] int64 on hidden's device. fused_kernel: the rows' softmax and gradient
// by cross_entropy_rows_ (one kernel on CUDA), else by its ATen reference.
ChunkedResult chunked(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                      std::int64_t chunk_rows, bool want_dh, bool want_dw, bool fused_kernel) {
  const std::int64_t n = hidden.size(0);
  ChunkedResult r;
  r.loss = at::zeros({}, hidden.options().dtype(at::kFloat));
  if (want_dh) r.dh = at::empty_like(hidden, at::MemoryFormat::Contiguous);
  if (want_dw) r.dw = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
  const bool grad = want_dh || want_dw;
  for (std::int64_t start = 0; start < n; start += chunk_rows) {
    const std::int64_t rows = std::min(chunk_rows, n - start);
    const at::Tensor h = hidden.narrow(0, start, rows);
    const at::Tensor t = targets.narrow(0, start, rows);
    // Logits in the compute dtype (as the unfused head makes them), the softmax in fp32; with a gradient wanted the
    // logits become d(loss)/d(logits) in place, in the same dtype.
    at::Tensor dl = at::mm(h, weight.t());
    const at::Tensor row_loss = fused_kernel ? cross_entropy_rows_(dl, t, kIgnoreIndex, grad)
                                             : cross_entropy_rows_reference_(dl, t, kIgnoreIndex, grad);
    r.loss.add_(row_loss.sum());
    if (!grad) continue;
    if (want_dh) {
      at::Tensor dh = r.dh.narrow(0, start, rows);  // rows of a contiguous tensor: written in place by the matmul
      at::mm_out(dh, dl, weight);
    }
    if (want_dw) accumulate_dw(r.dw, dl, h);
  }
  return r;
}

class LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, std::int64_t chunk_rows, bool fused_kernel) {
    ChunkedResult r =
        chunked(hidden, weight, targets, chunk_rows, hidden.requires_grad(), weight.requires_grad(), fused_kernel);
    ctx->save_for_backward({r.dh, r.dw});
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    return r.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grad[0];
    at::Tensor dh, dw;
    if (saved[0].defined()) dh = saved[0] * g.to(at::kFloat);  // rounded once to hidden's dtype
    if (saved[1].defined()) {  // scaled and rounded to the weight's dtype in one pass: no second fp32 [V, d]
      dw = at::empty(saved[1].sizes(), saved[1].options().dtype(ctx->saved_data["weight_dtype"].toScalarType()));
      at::mul_out(dw, saved[1], g.to(at::kFloat));
    }
    return {dh, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::int64_t linear_cross_entropy_chunk_rows(std::int64_t vocab, std::int64_t budget_bytes) {
  return std::max<std::int64_t>(1, budget_bytes / (std::max<std::int64_t>(vocab, 1) * 4));
}

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    std::int64_t chunk_rows, bool fused_kernel) {
  TORCH_CHECK(weight.dim() == 2 && hidden.size(-1) == weight.size(1), "weight must be [V, ", hidden.size(-1), "], got ",
              weight.sizes());
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type() && hidden.device() == weight.device(),
              "hidden and weight must share dtype and device, got ", hidden.scalar_type(), " ", hidden.device(),
              " and ", weight.scalar_type(), " ", weight.device());
  TORCH_CHECK(targets.numel() * hidden.size(-1) == hidden.numel(), "targets ", targets.sizes(),
              " must have one entry per row of hidden ", hidden.sizes());
  const at::Tensor h = hidden.reshape({-1, hidden.size(-1)});
  const at::Tensor t = targets.reshape({-1}).to(hidden.device(), at::kLong);
  const std::int64_t rows = chunk_rows > 0 ? chunk_rows : linear_cross_entropy_chunk_rows(weight.size(0));
  // Evaluation needs the loss only: no gradient work, no autograd node.
  if (!at::GradMode::is_enabled() || (!h.requires_grad() && !weight.requires_grad()))
    return chunked(h, weight, t, rows, false, false, fused_kernel).loss;
  return LinearCrossEntropy::apply(h, weight, t, rows, fused_kernel);
}

at::Tensor head_loss_sum(LlamaImpl& model, const at::Tensor& x, const at::Tensor& targets) {
  if (!model.fused_loss() || !model.head_is_matmul()) return token_loss_sum(model.head(x), targets);
  return linear_cross_entropy_sum(model.final_norm(x), model.head_weight(), targets, 0, model.fused_kernels());
}

}  // namespace ranktune
