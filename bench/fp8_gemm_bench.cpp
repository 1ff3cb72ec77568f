// ranktune_fp8_gemm_bench: what FP8 matmuls would buy the frozen base of a LoRA step, measured before any of it is
// built (issue #17's optional lever). For each linear of one Llama-3-8B layer at M tokens (default 4096 = batch 2 x
// 2048), times the two base matmuls of a LoRA step in bf16 (forward Y = X W^T, backward dX = dY W) against
// at::_scaled_mm in e4m3 with row-wise scales (forward: X per token, W per output row; backward: dY per token, W
// per input column, a transposed e4m3 copy), with and without fast accumulation, and the cost of the quantization
// kernels of kernels/fp8.h: activations by rows, the frozen weight by rows and by columns in each call.
// Each figure times CUDA-graph replays of back-to-back calls. Prints a markdown table, then the layer's totals.
// Usage: ranktune_fp8_gemm_bench [tokens] [replays]
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "graph_timing.h"
#include "ranktune/kernels/fp8.h"

using namespace ranktune;
using bench::seconds_per_call;

namespace {

struct Shape {
  std::string name;
  std::int64_t out, in;
};

double rel_err(const at::Tensor& got, const at::Tensor& ref) {
  return ((got.to(at::kFloat) - ref.to(at::kFloat)).norm() / ref.to(at::kFloat).norm()).item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t m = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int replays = argc > 2 ? std::atoi(argv[2]) : 20;
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "ranktune_fp8_gemm_bench: no CUDA device visible\n");
    return 4;
  }
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(0));
  std::printf("device: %s; %lld tokens; Llama-3-8B layer (d 4096, kv 1024, ffn 14336)\n\n",
              at::cuda::getCurrentDeviceProperties()->name, static_cast<long long>(m));
  const std::vector<Shape> shapes = {{"q_proj", 4096, 4096},    {"k_proj", 1024, 4096},     {"v_proj", 1024, 4096},
                                     {"o_proj", 4096, 4096},    {"gate_proj", 14336, 4096}, {"up_proj", 14336, 4096},
                                     {"down_proj", 4096, 14336}};
  std::printf(
      "| weight | fwd bf16 us | fwd fp8 us (fast accum) | fwd TFLOP/s bf16 / fp8 | bwd dX bf16 us | bwd dX fp8 us | "
      "quant X / dY us | quant W rows / columns us | rel err fwd / bwd |\n|---|---|---|---|---|---|---|---|---|\n");
  at::manual_seed(0);
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  double sum_bf16 = 0, sum_fp8 = 0, sum_quant = 0, sum_weight_quant = 0;
  for (const Shape& s : shapes) {
    const at::Tensor x = at::randn({m, s.in}, bf16);
    const at::Tensor w = at::randn({s.out, s.in}, bf16) * (1.0 / std::sqrt(static_cast<double>(s.in)));
    const at::Tensor dy = at::randn({m, s.out}, bf16) * 1e-3;
    const Fp8Rows wq = fp8_quantize_rows(w);      // [out, in], scale per output row
    const Fp8Rows wtq = fp8_quantize_columns(w);  // [in, out], scale per input column
    const Fp8Rows xq = fp8_quantize_rows(x), dyq = fp8_quantize_rows(dy);
    // What training runs (fp8_rowwise_mm), and the same forward with fast accumulation, which it does not use.
    auto fwd_fp8 = [&] { return fp8_rowwise_mm(xq, wq, at::kBFloat16); };
    auto bwd_fp8 = [&] { return fp8_rowwise_mm(dyq, wtq, at::kBFloat16); };
    auto fwd_fp8_fast = [&] {
      return at::_scaled_mm(xq.q, wq.q.t(), xq.scale, wq.scale.view({1, s.out}), {}, {}, at::kBFloat16, true);
    };
    const double e_fwd = rel_err(fwd_fp8(), at::mm(x, w.t()));
    const double e_bwd = rel_err(bwd_fp8(), at::mm(dy, w));
    const double t_fwd = seconds_per_call([&] { (void)at::mm(x, w.t()); }, replays);
    const double t_fwd8 = seconds_per_call([&] { (void)fwd_fp8(); }, replays);
    const double t_fwd8f = seconds_per_call([&] { (void)fwd_fp8_fast(); }, replays);
    const double t_bwd = seconds_per_call([&] { (void)at::mm(dy, w); }, replays);
    const double t_bwd8 = seconds_per_call([&] { (void)bwd_fp8(); }, replays);
    const double t_qx = seconds_per_call([&] { (void)fp8_quantize_rows(x); }, replays);
    const double t_qdy = seconds_per_call([&] { (void)fp8_quantize_rows(dy); }, replays);
    const double t_qw = seconds_per_call([&] { (void)fp8_quantize_rows(w); }, replays);
    const double t_qwt = seconds_per_call([&] { (void)fp8_quantize_columns(w); }, replays);
    const double flop = 2.0 * static_cast<double>(m) * static_cast<double>(s.out) * static_cast<double>(s.in);
    std::printf("| %s | %.0f | %.0f (%.0f) | %.0f / %.0f | %.0f | %.0f | %.0f / %.0f | %.0f / %.0f | %.4f / %.4f |\n",
                s.name.c_str(), t_fwd * 1e6, t_fwd8 * 1e6, t_fwd8f * 1e6, flop / t_fwd / 1e12, flop / t_fwd8 / 1e12,
                t_bwd * 1e6, t_bwd8 * 1e6, t_qx * 1e6, t_qdy * 1e6, t_qw * 1e6, t_qwt * 1e6, e_fwd, e_bwd);
    // A checkpointed LoRA step runs each base matmul forward twice (forward, recomputation) and dX once.
    sum_bf16 += 2 * t_fwd + t_bwd;
    sum_fp8 += 2 * t_fwd8 + t_bwd8;
    // q, k, v share one input and gate, up share another: their X is quantized once (twice with recomputation).
    const bool shares_input = s.name == "k_proj" || s.name == "v_proj" || s.name == "up_proj";
    sum_quant += (shares_input ? 0 : 2 * t_qx) + t_qdy;
    sum_weight_quant += 2 * t_qw + t_qwt;  // the frozen weight quantized in each call (nothing kept across calls)
  }
  const double all = sum_fp8 + sum_quant + sum_weight_quant;
  std::printf(
      "\none checkpointed layer's base matmuls (2 forward + dX): bf16 %.2f ms, fp8 %.2f ms (%.2fx); "
      "+ activation quantization %.2f ms + weight quantization %.2f ms -> %.2f ms (%.2fx)\n",
      sum_bf16 * 1e3, sum_fp8 * 1e3, sum_bf16 / sum_fp8, sum_quant * 1e3, sum_weight_quant * 1e3, all * 1e3,
      sum_bf16 / all);
  return 0;
}
