// The NF4 base linear as a custom autograd function: the quantized tensors ride in the context (they are buffers,
// never differentiated), and each direction dequantizes for itself.
#include "ranktune/model/nf4_linear.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <optional>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

void stash(AutogradContext* ctx, const Nf4Weight& w) {
  ctx->saved_data["packed"] = w.packed;
  ctx->saved_data["absmax"] = w.absmax;
  ctx->saved_data["quant_map"] = w.quant_map;
  ctx->saved_data["nested_absmax"] = w.nested_absmax;
  ctx->saved_data["nested_quant_map"] = w.nested_quant_map;
  ctx->saved_data["offset"] = static_cast<double>(w.offset);
  ctx->saved_data["shape"] = w.shape;
  ctx->saved_data["dtype"] = static_cast<std::int64_t>(w.dtype);
}

Nf4Weight unstash(AutogradContext* ctx) {
  Nf4Weight w;
  w.packed = ctx->saved_data["packed"].toTensor();
  w.absmax = ctx->saved_data["absmax"].toTensor();
  w.quant_map = ctx->saved_data["quant_map"].toTensor();
  w.nested_absmax = ctx->saved_data["nested_absmax"].toTensor();
  w.nested_quant_map = ctx->saved_data["nested_quant_map"].toTensor();
  w.offset = static_cast<float>(ctx->saved_data["offset"].toDouble());
  w.shape = ctx->saved_data["shape"].toIntVector();
  w.dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
  return w;
}

class Nf4LinearFunction : public torch::autograd::Function<Nf4LinearFunction> {
 public:
  // The bias is optional so that autograd sees no input where there is none.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                            const Nf4Weight& w) {
    stash(ctx, w);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["compute"] = static_cast<std::int64_t>(x.scalar_type());
    return at::linear(x, nf4_dequantize(w, x.scalar_type()), bias);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const at::Tensor& dy = grads[0];
    const auto compute = static_cast<at::ScalarType>(ctx->saved_data["compute"].toInt());
    at::Tensor dx, db;
    if (ctx->needs_input_grad(0)) dx = at::matmul(dy, nf4_dequantize(unstash(ctx), compute));
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(1)) db = dy.reshape({-1, dy.size(-1)}).sum(0);
    return {dx, db, at::Tensor()};
  }
};

}  // namespace

at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias) {
  if (w.shape.size() != 2 || x.size(-1) != w.shape[1])
    throw LibraryError("nf4_linear: input of " + std::to_string(x.size(-1)) + " features for a weight of shape " +
                       c10::str(at::IntArrayRef(w.shape)));
  if (w.packed.device() != x.device())
    throw LibraryError("nf4_linear: the weight is on " + w.packed.device().str() + ", the input on " +
                       x.device().str());
  return Nf4LinearFunction::apply(x, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, w);
}

}  // namespace ranktune
