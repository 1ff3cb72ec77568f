// The LoRA fast path as a custom autograd function. Saved for backward: the adapter's input (the caller's tensor
// itself, never a copy or a cast, so storage shared by q, k and v is held once), x A^T ([tokens, r]) and the small
// compute-dtype copies of A and s*B; the frozen base weight is a parameter, saving it costs nothing.
#include "ranktune/model/lora_linear.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include <optional>
#include <vector>

#include "lora_adapter_math.h"
#include "ranktune/core/error.h"
#include "ranktune/kernels/swiglu.h"

namespace ranktune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

using namespace lora_math;

class LoraLinearFunction : public torch::autograd::Function<LoraLinearFunction> {
 public:
  // bias and adapter_input are optionals: autograd refuses an undefined tensor argument, and an absent optional is
  // no input at all, so the edge of each present input is counted here for needs_input_grad.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias_arg, const at::Tensor& lora_A,
                            const at::Tensor& lora_B, const std::optional<at::Tensor>& adapter_arg, double scale,
                            bool fp8) {
    const at::Tensor bias = bias_arg.value_or(at::Tensor()), adapter_input = adapter_arg.value_or(at::Tensor());
    store_edges(ctx, {&x, &weight, &bias, &lora_A, &lora_B, &adapter_input});

    const at::ScalarType dtype = x.scalar_type();
    const at::Tensor& xin = adapter_input.defined() ? adapter_input : x;
    const auto [a, sb, xa] = adapter_products(xin, lora_A, lora_B, scale, dtype);
    at::Tensor y = base_forward(x, weight, bias, fp8);
    flat(y).addmm_(xa, sb.t());  // one accumulate into the base output: no [tokens, out] temporary

    ctx->save_for_backward({weight.requires_grad() ? x : at::Tensor(), xin, xa, weight, a, sb});
    ctx->saved_data["separate"] = adapter_input.defined();
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["fp8"] = fp8;
    ctx->saved_data["dtypes"] =
        std::vector<std::int64_t>{static_cast<std::int64_t>(weight.scalar_type()),
                                  static_cast<std::int64_t>(bias.defined() ? bias.scalar_type() : dtype),
                                  static_cast<std::int64_t>(lora_A.scalar_type()),
                                  static_cast<std::int64_t>(lora_B.scalar_type())};
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &xin = saved[1], &xa = saved[2], &weight = saved[3], &a = saved[4], &sb = saved[5];
    const bool separate = ctx->saved_data["separate"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool fp8 = ctx->saved_data["fp8"].toBool();
    const std::vector<std::int64_t> dtypes = ctx->saved_data["dtypes"].toIntVector();
    const auto dtype = [&](int i) { return static_cast<at::ScalarType>(dtypes[i]); };
    const auto needs = [&](int i) { return edge_needed(ctx, i); };

    const at::Tensor dy = flat(grads[0]);
    const at::Tensor xin2 = flat(xin);
    const at::Tensor g = at::mm(dy, sb);  // the gradient of x A^T, [tokens, r]
    at::Tensor dx, dw, db, da, dB, dxin;
    if (separate) {
      if (needs(0)) dx = base_input_grad(dy, weight, fp8).view(xin.sizes());
      if (needs(5)) dxin = at::mm(g, a).view(xin.sizes());
    } else if (needs(0)) {
      dx = base_input_grad(dy, weight, fp8);
      dx.addmm_(g, a);  // base and adapter parts summed by the matmul, not by a separate add
      dx = dx.view(xin.sizes());
    }
    if (needs(1)) dw = mm_to(dy.t(), flat(x), dtype(0));
    if (needs(2)) db = dy.sum(0).to(dtype(1));
    if (needs(3)) da = mm_to(g.t(), xin2, dtype(2));
    if (needs(4)) {
      dB = mm_to(dy.t(), xa, dtype(3));
      if (scale != 1.0) dB.mul_(scale);
    }
    return {dx, dw, db, da, dB, dxin, at::Tensor(), at::Tensor()};
  }
};

// down_proj over swiglu(gate, up) with a LoRA adapter on a frozen base: h = swiglu(gate, up) is not saved (it is
// the largest activation of a layer, [tokens, ffn]); backward recomputes it from gate and up, which the SwiGLU
// gradient needs anyway, for dA only.
class LoraSwigluLinearFunction : public torch::autograd::Function<LoraSwigluLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias_arg,
                            const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, bool fp8) {
    const at::Tensor bias = bias_arg.value_or(at::Tensor());
    store_edges(ctx, {&gate, &up, &weight, &bias, &lora_A, &lora_B});
    const at::ScalarType dtype = gate.scalar_type();
    const at::Tensor h = swiglu_forward(gate, up);
    const auto [a, sb, xa] = adapter_products(h, lora_A, lora_B, scale, dtype);
    at::Tensor y = base_forward(h, weight, bias, fp8);
    flat(y).addmm_(xa, sb.t());
    ctx->save_for_backward({gate, up, xa, weight, a, sb});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["fp8"] = fp8;
    store_grad_dtypes(ctx, bias, dtype, lora_A, lora_B);
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1], &xa = saved[2], &weight = saved[3], &a = saved[4],
                     &sb = saved[5];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto needs = [&](int i) { return edge_needed(ctx, i); };  // gate 0, up 1, weight 2, bias 3, A 4, B 5

    const SwigluDownGrads d = swiglu_down_backward(ctx, grads[0], gate, up, weight, xa, a, sb, scale, needs(3),
                                                   needs(4), needs(5), ctx->saved_data["fp8"].toBool());
    return {d.dgate, d.dup, at::Tensor(), d.db, d.da, d.dB, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lora_swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                              const at::Tensor& bias, const at::Tensor& lora_A, const at::Tensor& lora_B, double scale,
                              bool fp8) {
  RECORD_FUNCTION("ranktune::lora_swiglu_linear", c10::ArrayRef<const c10::IValue>{});
  const std::int64_t in = weight.size(1), out = weight.size(0), r = lora_A.size(0);
  if (gate.sizes() != up.sizes() || gate.size(-1) != in || lora_A.size(1) != in || lora_B.size(0) != out ||
      lora_B.size(1) != r)
    throw LibraryError("lora_swiglu_linear: shapes disagree: gate " + c10::str(gate.sizes()) + ", up " +
                       c10::str(up.sizes()) + ", weight " + c10::str(weight.sizes()) + ", lora_A " +
                       c10::str(lora_A.sizes()) + ", lora_B " + c10::str(lora_B.sizes()));
  if (weight.requires_grad())
    throw LibraryError("lora_swiglu_linear: the base weight must be frozen (it recomputes what dW would need)");
  const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return LoraSwigluLinearFunction::apply(gate, up, weight, b, lora_A, lora_B, scale, fp8);
}

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, double scale, const at::Tensor& adapter_input, bool fp8) {
  RECORD_FUNCTION("ranktune::lora_linear", c10::ArrayRef<const c10::IValue>{});  // a named row in profile tables
  const std::int64_t in = weight.size(1), out = weight.size(0), r = lora_A.size(0);
  if (x.size(-1) != in || lora_A.size(1) != in || lora_B.size(0) != out || lora_B.size(1) != r)
    throw LibraryError("lora_linear: shapes disagree: x " + c10::str(x.sizes()) + ", weight " +
                       c10::str(weight.sizes()) + ", lora_A " + c10::str(lora_A.sizes()) + ", lora_B " +
                       c10::str(lora_B.sizes()));
  if (adapter_input.defined() && adapter_input.sizes() != x.sizes())
    throw LibraryError("lora_linear: adapter input " + c10::str(adapter_input.sizes()) + " for x " +
                       c10::str(x.sizes()));
  if (fp8 && weight.requires_grad())
    throw LibraryError("lora_linear: FP8 base matmuls need a frozen base weight (they compute no weight gradient)");
  const auto present = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  return LoraLinearFunction::apply(x, weight, present(bias), lora_A, lora_B, present(adapter_input), scale, fp8);
}

}  // namespace ranktune
