// ranktune_nf4_dequant_bench: throughput of the NF4 -> bf16 dequantization kernel (kernels/nf4.h) on the weights of
// a 1.1B (TinyLlama), an 8B (Llama-3-8B) and a 70B (Llama-3.3-70B) layer, against the GPU's memory bandwidth.
// GB/s counts the bytes the kernel must move: packed codes, 8-bit absmaxes and nested absmaxes read, bf16 written.
// Each figure times CUDA-graph replays of back-to-back calls, so the host's launch cost does not hide the kernel's;
// beside it, a bf16 device-to-device copy of the same weight (the practical ceiling) and the peak from the memory
// clock and bus width. Prints a markdown table. Usage: ranktune_nf4_dequant_bench [replays] (default 20)
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "graph_timing.h"
#include "ranktune/core/cuda_check.h"
#include "ranktune/kernels/nf4.h"

using namespace ranktune;
using bench::seconds_per_call;

namespace {

struct Shape {
  std::string model, name;
  std::int64_t out, in;
};

// q, k, v, o, gate, up, down of one layer.
std::vector<Shape> layer(const std::string& model, std::int64_t d, std::int64_t kv, std::int64_t ffn) {
  return {{model, "q_proj", d, d},     {model, "k_proj", kv, d},     {model, "v_proj", kv, d},
          {model, "o_proj", d, d},     {model, "gate_proj", ffn, d}, {model, "up_proj", ffn, d},
          {model, "down_proj", d, ffn}};
}

}  // namespace

int main(int argc, char** argv) {
  const int replays = argc > 1 ? std::atoi(argv[1]) : 20;
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "ranktune_nf4_dequant_bench: no CUDA device visible\n");
    return 4;
  }
  const int device = 0;
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
  int clock_khz = 0, bus_bits = 0;
  RANKTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  RANKTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  const double peak = 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9;  // double data rate, GB/s
  std::printf("device: %s; peak memory bandwidth %.0f GB/s (memory clock %d MHz x %d-bit bus x 2)\n\n",
              at::cuda::getCurrentDeviceProperties()->name, peak, clock_khz / 1000, bus_bits);

  std::vector<Shape> shapes = layer("1.1B", 2048, 256, 5632);
  for (const auto& s : layer("8B", 4096, 1024, 14336)) shapes.push_back(s);
  for (const auto& s : layer("70B", 8192, 1024, 28672)) shapes.push_back(s);

  std::printf("| model | weight | shape | MB moved | us/call | GB/s | %% of peak | bf16 copy GB/s | %% of copy |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  at::manual_seed(0);
  const auto opts = at::TensorOptions().device(at::kCUDA, device).dtype(at::kBFloat16);
  for (const Shape& s : shapes) {
    const at::Tensor w = at::randn({s.out, s.in}, opts);
    const Nf4Weight q = nf4_quantize(w);
    const double n = static_cast<double>(w.numel());
    const double bytes = static_cast<double>(q.packed.nbytes() + q.absmax.nbytes() + q.nested_absmax.nbytes()) + 2 * n;
    const double t = seconds_per_call([&] { (void)nf4_dequantize(q, at::kBFloat16); }, replays);
    at::Tensor copy = at::empty_like(w);
    const double tc = seconds_per_call([&] { copy.copy_(w); }, replays);
    const double gbs = bytes / t / 1e9, copy_gbs = 4 * n / tc / 1e9;
    std::printf("| %s | %s | %lldx%lld | %.1f | %.1f | %.0f | %.1f | %.0f | %.1f |\n", s.model.c_str(), s.name.c_str(),
                static_cast<long long>(s.out), static_cast<long long>(s.in), bytes / 1e6, t * 1e6, gbs,
                100 * gbs / peak, copy_gbs, 100 * gbs / copy_gbs);
  }
  return 0;
}
