// The NF4 base linear as a custom autograd function: the quantized tensors ride in the context (they are buffers,
// never differentiated), and each direction dequantizes for itself.
#include "ranktune/model/nf4_linear.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include <optional>
#include <vector>

#include "lora_adapter_math.h"
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

// bitsandbytes' matmul_4bit: dequantized to the state's dtype (the weight's before quantization), then cast to the
// compute dtype, so an fp32 forward over a bf16 state sees bf16-rounded weights, as PEFT + bnb's does.
at::Tensor dequantized(const Nf4Weight& w, at::ScalarType compute) {
  const at::Tensor d = nf4_dequantize(w);
  return d.scalar_type() == compute ? d : d.to(compute);
}

class Nf4LinearFunction : public torch::autograd::Function<Nf4LinearFunction> {
 public:
  // The bias is optional so that autograd sees no input where there is none.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                            const Nf4Weight& w) {
    stash(ctx, w);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["compute"] = static_cast<std::int64_t>(x.scalar_type());
    return at::linear(x, dequantized(w, x.scalar_type()), bias);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const at::Tensor& dy = grads[0];
    const auto compute = static_cast<at::ScalarType>(ctx->saved_data["compute"].toInt());
    at::Tensor dx, db;
    if (ctx->needs_input_grad(0)) dx = at::matmul(dy, dequantized(unstash(ctx), compute));
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(1)) db = dy.reshape({-1, dy.size(-1)}).sum(0);
    return {dx, db, at::Tensor()};
  }
};

// lora_linear.cpp's arithmetic (lora_adapter_math.h), so that the two ops agree bit for bit over the same dense weight.
using namespace lora_math;

class QloraLinearFunction : public torch::autograd::Function<QloraLinearFunction> {
 public:
  // Optionals for bias and adapter input: an absent one is no autograd input, so each present input's edge is
  // counted here for needs_input_grad (as lora_linear.cpp does).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias_arg,
                            const at::Tensor& lora_A, const at::Tensor& lora_B,
                            const std::optional<at::Tensor>& adapter_arg, double scale, const Nf4Weight& w) {
    const at::Tensor bias = bias_arg.value_or(at::Tensor()), adapter_input = adapter_arg.value_or(at::Tensor());
    store_edges(ctx, {&x, &bias, &lora_A, &lora_B, &adapter_input});

    const at::ScalarType dtype = x.scalar_type();
    const at::Tensor& xin = adapter_input.defined() ? adapter_input : x;
    const auto [a, sb, xa] = adapter_products(xin, lora_A, lora_B, scale, dtype);
    at::Tensor y = at::linear(x, dequantized(w, dtype), bias);  // the dense weight dies here
    flat(y).addmm_(xa, sb.t());

    stash(ctx, w);
    ctx->save_for_backward({xin, xa, a, sb});
    ctx->saved_data["separate"] = adapter_input.defined();
    ctx->saved_data["scale"] = scale;
    store_grad_dtypes(ctx, bias, dtype, lora_A, lora_B);
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &xin = saved[0], &xa = saved[1], &a = saved[2], &sb = saved[3];
    const bool separate = ctx->saved_data["separate"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto dtype = [&](int i) { return grad_dtype(ctx, i); };
    const auto needs = [&](int i) { return edge_needed(ctx, i); };

    const at::Tensor dy = flat(grads[0]);
    const at::Tensor g = at::mm(dy, sb);  // the gradient of x A^T, [tokens, r]
    at::Tensor dx, db, da, dB, dxin;
    if (needs(0)) {
      dx = at::mm(dy, dequantized(unstash(ctx), a.scalar_type()));
      if (!separate) dx.addmm_(g, a);  // base and adapter parts summed by the matmul
      dx = dx.view(xin.sizes());
    }
    if (separate && needs(4)) dxin = at::mm(g, a).view(xin.sizes());
    if (needs(1)) db = dy.sum(0).to(dtype(0));
    if (needs(2)) da = mm_to(g.t(), flat(xin), dtype(1));
    if (needs(3)) {
      dB = mm_to(dy.t(), xa, dtype(2));
      if (scale != 1.0) dB.mul_(scale);
    }
    return {dx, db, da, dB, dxin, at::Tensor(), at::Tensor()};
  }
};

// down_proj over swiglu(gate, up) on an NF4 base: lora_swiglu_linear's op (the [tokens, ffn] product is recomputed
// in backward, not kept) with the weight dequantized in each direction.
class QloraSwigluLinearFunction : public torch::autograd::Function<QloraSwigluLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up,
                            const std::optional<at::Tensor>& bias_arg, const at::Tensor& lora_A,
                            const at::Tensor& lora_B, double scale, const Nf4Weight& w) {
    const at::Tensor bias = bias_arg.value_or(at::Tensor());
    store_edges(ctx, {&gate, &up, &bias, &lora_A, &lora_B});
    const at::ScalarType dtype = gate.scalar_type();
    const at::Tensor h = swiglu_forward(gate, up);
    const auto [a, sb, xa] = adapter_products(h, lora_A, lora_B, scale, dtype);
    at::Tensor y = at::linear(h, dequantized(w, dtype), bias);
    flat(y).addmm_(xa, sb.t());
    stash(ctx, w);
    ctx->save_for_backward({gate, up, xa, a, sb});
    ctx->saved_data["scale"] = scale;
    store_grad_dtypes(ctx, bias, dtype, lora_A, lora_B);
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1], &xa = saved[2], &a = saved[3], &sb = saved[4];
    const auto needs = [&](int i) { return edge_needed(ctx, i); };  // gate 0, up 1, bias 2, A 3, B 4
    const SwigluDownGrads d = swiglu_down_backward(ctx, grads[0], gate, up, dequantized(unstash(ctx), a.scalar_type()),
                                                   xa, a, sb, ctx->saved_data["scale"].toDouble(), needs(2), needs(3),
                                                   needs(4));
    return {d.dgate, d.dup, d.db, d.da, d.dB, at::Tensor(), at::Tensor()};
  }
};

void check_input(const char* op, const at::Tensor& x, const Nf4Weight& w) {
  if (w.shape.size() != 2 || x.size(-1) != w.shape[1])
    throw LibraryError(std::string(op) + ": input of " + std::to_string(x.size(-1)) +
                       " features for a weight of shape " + c10::str(at::IntArrayRef(w.shape)));
  if (w.packed.device() != x.device())
    throw LibraryError(std::string(op) + ": the weight is on " + w.packed.device().str() + ", the input on " +
                       x.device().str());
}

}  // namespace

at::Tensor qlora_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias, const at::Tensor& lora_A,
                        const at::Tensor& lora_B, double scale, const at::Tensor& adapter_input) {
  RECORD_FUNCTION("ranktune::qlora_linear", c10::ArrayRef<const c10::IValue>{});
  check_input("qlora_linear", x, w);
  const std::int64_t in = w.shape[1], out = w.shape[0], r = lora_A.size(0);
  if (lora_A.dim() != 2 || lora_B.dim() != 2 || lora_A.size(1) != in || lora_B.size(0) != out || lora_B.size(1) != r)
    throw LibraryError("qlora_linear: adapter shapes disagree with the weight " + c10::str(at::IntArrayRef(w.shape)) +
                       ": lora_A " + c10::str(lora_A.sizes()) + ", lora_B " + c10::str(lora_B.sizes()));
  if (adapter_input.defined() && adapter_input.sizes() != x.sizes())
    throw LibraryError("qlora_linear: adapter input " + c10::str(adapter_input.sizes()) + " for x " +
                       c10::str(x.sizes()));
  const auto present = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  return QloraLinearFunction::apply(x, present(bias), lora_A, lora_B, present(adapter_input), scale, w);
}

at::Tensor qlora_swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const Nf4Weight& w, const at::Tensor& bias,
                               const at::Tensor& lora_A, const at::Tensor& lora_B, double scale) {
  RECORD_FUNCTION("ranktune::qlora_swiglu_linear", c10::ArrayRef<const c10::IValue>{});
  check_input("qlora_swiglu_linear", gate, w);
  const std::int64_t in = w.shape[1], out = w.shape[0], r = lora_A.size(0);
  if (gate.sizes() != up.sizes() || lora_A.dim() != 2 || lora_B.dim() != 2 || lora_A.size(1) != in ||
      lora_B.size(0) != out || lora_B.size(1) != r)
    throw LibraryError("qlora_swiglu_linear: shapes disagree: gate " + c10::str(gate.sizes()) + ", up " +
                       c10::str(up.sizes()) + ", weight " + c10::str(at::IntArrayRef(w.shape)) + ", lora_A " +
                       c10::str(lora_A.sizes()) + ", lora_B " + c10::str(lora_B.sizes()));
  const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return QloraSwigluLinearFunction::apply(gate, up, b, lora_A, lora_B, scale, w);
}

at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w, const at::Tensor& bias) {
  RECORD_FUNCTION("ranktune::nf4_linear", c10::ArrayRef<const c10::IValue>{});
  check_input("nf4_linear", x, w);
  return Nf4LinearFunction::apply(x, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, w);
}

}  // namespace ranktune
