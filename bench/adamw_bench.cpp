// ranktune_adamw_bench: the optimizer step of a full fine-tune of the 1.1B (TinyLlama) shape on one GPU: bf16
// parameters with fp32 masters, the reference step (fp32 gradient copies, at::_fused_adamw_, the copy back) against the
// one-pass kernel (kernels/adamw.h, train.adamw_one_pass), through the optimizer class the trainer uses. GB/s counts
// the bytes each must move: 40 a parameter for the reference (bf16 gradient read and fp32 copy written, 12 bytes of
// state read and written plus the fp32 gradient read, master read and bf16 parameter written), 28 for the one pass.
// Usage: ranktune_adamw_bench [steps] (default 10; two untimed steps first). Prints a markdown table.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ranktune/core/cuda_check.h"
#include "ranktune/train/optimizer.h"

using namespace ranktune;

namespace {

// The trainable tensors of the TinyLlama-1.1B shape: embedding, 22 layers of q, k, v, o, gate, up, down and two
// norms, the final norm and the head.
NamedTensors tiny_llama_params(const at::TensorOptions& opts) {
  const std::int64_t d = 2048, kv = 256, ffn = 5632, vocab = 32000;
  NamedTensors p;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape) {
    at::Tensor t = (at::randn(shape, opts.dtype(at::kFloat)) * 0.02).to(at::kBFloat16).requires_grad_(true);
    t.mutable_grad() = (at::randn(shape, opts.dtype(at::kFloat)) * 1e-3).to(at::kBFloat16);
    p.insert(name, t);
  };
  add("embed", {vocab, d});
  for (int l = 0; l < 22; ++l) {
    const std::string L = "layers." + std::to_string(l) + ".";
    add(L + "q", {d, d});
    add(L + "k", {kv, d});
    add(L + "v", {kv, d});
    add(L + "o", {d, d});
    add(L + "gate", {ffn, d});
    add(L + "up", {ffn, d});
    add(L + "down", {d, ffn});
    add(L + "norm1", {d});
    add(L + "norm2", {d});
  }
  add("norm", {d});
  add("head", {vocab, d});
  return p;
}

double ms_per_step(bool one_pass, int steps, std::int64_t* numel) {
  const auto opts = at::TensorOptions().device(at::kCUDA, 0);
  at::manual_seed(0);
  NamedTensors params = tiny_llama_params(opts);
  *numel = 0;
  for (const auto& item : params) *numel += item.value().numel();
  AdamWOptions o;
  o.weight_decay = 0.1;
  o.one_pass = one_pass;
  AdamW opt(params, o);
  for (int i = 0; i < 2; ++i) opt.step(1e-5);
  cudaEvent_t start, stop;
  RANKTUNE_CUDA_CHECK(cudaEventCreate(&start));
  RANKTUNE_CUDA_CHECK(cudaEventCreate(&stop));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  RANKTUNE_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < steps; ++i) opt.step(1e-5);
  RANKTUNE_CUDA_CHECK(cudaEventRecord(stop, stream));
  RANKTUNE_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  RANKTUNE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  RANKTUNE_CUDA_CHECK(cudaEventDestroy(start));
  RANKTUNE_CUDA_CHECK(cudaEventDestroy(stop));
  return ms / steps;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 10;
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "ranktune_adamw_bench: no CUDA device visible\n");
    return 4;
  }
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(0));
  int clock_khz = 0, bus_bits = 0;
  RANKTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0));
  RANKTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  const double peak = 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9;  // double data rate, GB/s
  std::printf("device: %s; peak memory bandwidth %.0f GB/s; TinyLlama-1.1B shape, bf16 parameters, %d steps\n\n",
              at::cuda::getCurrentDeviceProperties()->name, peak, steps);
  std::printf("| step | ms/step | bytes/param | GB/s | %% of peak |\n|---|---|---|---|---|\n");
  for (bool one_pass : {false, true}) {
    std::int64_t numel = 0;
    const double ms = ms_per_step(one_pass, steps, &numel);
    const double bytes = (one_pass ? 28.0 : 40.0) * static_cast<double>(numel);
    const double gbs = bytes / (ms / 1e3) / 1e9;
    std::printf("| %s | %.2f | %d | %.0f | %.1f |\n", one_pass ? "one pass (train.adamw_one_pass)" : "reference", ms,
                one_pass ? 28 : 40, gbs, 100 * gbs / peak);
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
  return 0;
}
