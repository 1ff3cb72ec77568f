#include "ranktune/model/tiled_mlp.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <vector>

#include "ranktune/model/mlp.h"
#include "ranktune/model/rng_state.h"

namespace ranktune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The MLP on x ([..., hidden]) `rows` rows of its flattened leading dimensions at a time, into one output of x's
// leading shape.
at::Tensor by_slices(MlpImpl& mlp, const at::Tensor& x, std::int64_t rows) {
  const at::Tensor x2d = x.reshape({-1, x.size(-1)});
  at::Tensor out;
  for (std::int64_t begin = 0; begin < x2d.size(0); begin += rows) {
    const at::Tensor o = mlp.forward_untiled(x2d.slice(0, begin, begin + rows));
    if (!out.defined()) out = at::empty({x2d.size(0), o.size(1)}, o.options());
    out.slice(0, begin, begin + o.size(0)).copy_(o);
  }
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out.size(1);
  return out.view(shape);
}

struct TiledMlp : public torch::autograd::Function<TiledMlp> {
  // `params`: the MLP's parameters that require a gradient; they are inputs only so that autograd routes their
  // gradients through this node (the slices read them from the module).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, MlpImpl* mlp, std::int64_t rows,
                            at::TensorList params) {
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["mlp"] = reinterpret_cast<std::int64_t>(mlp);
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["rng"] = mlp->is_training() ? device_rng_state(x.device()) : at::Tensor();
    return by_slices(*mlp, x, rows);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved.at(0);
    const variable_list params(saved.begin() + 1, saved.end());
    auto* mlp = reinterpret_cast<MlpImpl*>(ctx->saved_data["mlp"].toInt());
    const std::int64_t rows = ctx->saved_data["rows"].toInt();

    const at::Tensor x2d = x.reshape({-1, x.size(-1)});
    const at::Tensor g2d = grad_out.at(0).reshape({x2d.size(0), -1});
    at::Tensor dx = at::empty_like(x2d);
    std::vector<at::Tensor> dparams(params.size());
    const DeviceRngReplay replay(x.device(), ctx->saved_data["rng"].toTensor());
    for (std::int64_t begin = 0; begin < x2d.size(0); begin += rows) {
      at::Tensor slice = x2d.slice(0, begin, begin + rows).detach().requires_grad_(true);
      at::Tensor out;
      {
        at::AutoGradMode grad_on(true);
        out = mlp->forward_untiled(slice);
      }
      variable_list inputs{slice};
      inputs.insert(inputs.end(), params.begin(), params.end());
      const variable_list grads = torch::autograd::grad({out}, inputs, {g2d.slice(0, begin, begin + out.size(0))},
                                                        /*retain_graph=*/false, /*create_graph=*/false,
                                                        /*allow_unused=*/true);
      dx.slice(0, begin, begin + out.size(0)).copy_(grads[0]);
      for (std::size_t i = 0; i < params.size(); ++i) {
        const at::Tensor& g = grads[i + 1];
        if (!g.defined()) continue;
        if (dparams[i].defined()) dparams[i].add_(g);
        else dparams[i] = g;
      }
    }
    variable_list result{dx.view(x.sizes()), at::Tensor(), at::Tensor()};
    result.insert(result.end(), dparams.begin(), dparams.end());
    return result;
  }
};

}  // namespace

at::Tensor tiled_mlp(MlpImpl& mlp, const at::Tensor& x, std::int64_t rows) {
  if (!at::GradMode::is_enabled()) return by_slices(mlp, x, rows);
  std::vector<at::Tensor> params;
  for (const at::Tensor& p : mlp.parameters())
    if (p.requires_grad()) params.push_back(p);
  return TiledMlp::apply(x, &mlp, rows, at::TensorList(params));
}

}  // namespace ranktune
