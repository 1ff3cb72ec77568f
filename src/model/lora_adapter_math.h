// defines: the arithmetic the LoRA autograd ops share (lora_linear.cpp, nf4_linear.cpp), in one place so that they
// round identically and a QLoRA layer equals a LoRA layer over the same dense weight bit for bit: flattening, s * B in
// the compute dtype, products widened to a gradient's dtype, the adapter's forward products, and the edge of each
// present autograd input. Internal to src/model.
#pragma once

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "ranktune/kernels/fp8.h"
#include "ranktune/kernels/swiglu.h"

namespace ranktune::lora_math {

inline at::Tensor flat(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

// s * B rounded once to the compute dtype, in one kernel: the scale rides on the [out, r] matrix, never on a
// [tokens, out] activation.
inline at::Tensor scaled_to(const at::Tensor& b, double scale, at::ScalarType dtype) {
  if (scale == 1.0) return b.to(dtype);
  at::Tensor out = at::empty(b.sizes(), b.options().dtype(dtype));
  at::Tensor s = at::scalar_tensor(scale, at::kDouble);
  s.unsafeGetTensorImpl()->set_wrapped_number(true);  // a Python-style scalar: it does not promote B's dtype
  return at::mul_out(out, b, s);
}

// a @ b returned in `dtype`: the product is rounded to its inputs' dtype, then widened, with the same ops on every
// device. (CUDA can accumulate 16-bit inputs straight into an fp32 result, at::mm(a, b, at::kFloat); that path waits
// for a GPU run to verify it.)
inline at::Tensor mm_to(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  return at::mm(a, b).to(dtype);
}

// The frozen base's two matmuls, Y = X W^T (+ b) and dX = dY W, in the compute dtype; with `fp8`
// (train.fp8_matmuls) in e4m3 by rows (kernels/fp8.h): X and dY per token, W per output row forward and per input
// column backward, quantized in each call, so no second copy of the weight outlives it.
inline at::Tensor base_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool fp8) {
  if (!fp8) return at::linear(x, weight, bias);
  std::vector<std::int64_t> shape = x.sizes().vec();
  shape.back() = weight.size(0);
  at::Tensor y = fp8_rowwise_mm(fp8_quantize_rows(flat(x)), fp8_quantize_rows(weight), x.scalar_type());
  if (bias.defined()) y.add_(bias);
  return y.view(shape);
}
inline at::Tensor base_input_grad(const at::Tensor& dy, const at::Tensor& weight, bool fp8) {
  if (!fp8) return at::mm(dy, weight);
  return fp8_rowwise_mm(fp8_quantize_rows(dy), fp8_quantize_columns(weight), dy.scalar_type());
}

// What the adapter's forward computes and its backward needs: A and s * B in the compute dtype, and x A^T.
struct AdapterProducts {
  at::Tensor a, sb, xa;
};
inline AdapterProducts adapter_products(const at::Tensor& xin, const at::Tensor& lora_A, const at::Tensor& lora_B,
                                        double scale, at::ScalarType dtype) {
  const at::Tensor a = lora_A.to(dtype);
  return {a, scaled_to(lora_B, scale, dtype), at::mm(flat(xin), a.t())};
}

// An absent optional is no autograd input at all: the needs_input_grad index of each argument (-1 when absent),
// stored under "edge" for edge_needed().
inline void store_edges(torch::autograd::AutogradContext* ctx, std::initializer_list<const at::Tensor*> args) {
  std::vector<std::int64_t> edge;
  std::int64_t next = 0;
  for (const at::Tensor* t : args) edge.push_back(t->defined() ? next++ : -1);
  ctx->saved_data["edge"] = edge;
}
inline bool edge_needed(torch::autograd::AutogradContext* ctx, int arg) {
  const std::vector<std::int64_t> edge = ctx->saved_data["edge"].toIntVector();
  return edge[arg] >= 0 && ctx->needs_input_grad(edge[arg]);
}

// The dtypes the gradients go back in: the bias's (or the compute dtype without one), A's and B's, stored under
// "dtypes" for grad_dtype(ctx, 0..2).
inline void store_grad_dtypes(torch::autograd::AutogradContext* ctx, const at::Tensor& bias, at::ScalarType compute,
                              const at::Tensor& lora_A, const at::Tensor& lora_B) {
  ctx->saved_data["dtypes"] =
      std::vector<std::int64_t>{static_cast<std::int64_t>(bias.defined() ? bias.scalar_type() : compute),
                                static_cast<std::int64_t>(lora_A.scalar_type()),
                                static_cast<std::int64_t>(lora_B.scalar_type())};
}
inline at::ScalarType grad_dtype(torch::autograd::AutogradContext* ctx, int i) {
  return static_cast<at::ScalarType>(ctx->saved_data["dtypes"].toIntVector()[i]);
}

// The backward of down_proj over h = swiglu(gate, up) with an adapter on a frozen base (lora_swiglu_linear over a
// dense weight, qlora_swiglu_linear over an NF4 one; `weight` is the dense weight in the compute dtype, `fp8` as
// base_input_grad's): h is
// recomputed from gate and up, for dA only. Returns {d_gate, d_up, d_bias, dA, dB}; `need` says which of bias, A
// and B want a gradient, in the dtypes of grad_dtype(ctx, 0..2).
struct SwigluDownGrads {
  at::Tensor dgate, dup, db, da, dB;
};
inline SwigluDownGrads swiglu_down_backward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad,
                                            const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                                            const at::Tensor& xa, const at::Tensor& a, const at::Tensor& sb,
                                            double scale, bool need_bias, bool need_a, bool need_b, bool fp8 = false) {
  SwigluDownGrads out;
  const at::Tensor dy = flat(grad);
  const at::Tensor g = at::mm(dy, sb);
  at::Tensor dh = base_input_grad(dy, weight, fp8);
  dh.addmm_(g, a);
  if (need_a) out.da = mm_to(g.t(), flat(swiglu_forward(gate, up)), grad_dtype(ctx, 1));
  if (need_b) {
    out.dB = mm_to(dy.t(), xa, grad_dtype(ctx, 2));
    if (scale != 1.0) out.dB.mul_(scale);
  }
  if (need_bias) out.db = dy.sum(0).to(grad_dtype(ctx, 0));
  std::tie(out.dgate, out.dup) = swiglu_backward(dh.view(gate.sizes()), gate, up);
  return out;
}

}  // namespace ranktune::lora_math
