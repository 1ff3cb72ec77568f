// ranktune_allreduce_bench: all-reduce bandwidth of ranktune's NcclCommunicator against a plain NCCL loop on the same
// ranks, GPUs and streams, over message sizes. One rank per GPU (mpirun -np N); prints a markdown table on rank 0:
// time per all-reduce, algbw = bytes / time and busbw = algbw * 2(n-1)/n (nccl-tests' definition), for both, and
// ranktune's busbw as a share of plain NCCL's; and the time of a plain loop on a non-blocking communicator.
// Usage: mpirun -np N ranktune_allreduce_bench [max_bytes] [iters]
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "ranktune/core/cuda_check.h"
#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/nccl_check.h"
#include "ranktune/distributed/nccl_communicator.h"

using namespace ranktune;

namespace {

// Seconds per call of `op`, averaged over `iters` after `warmup` calls; the slowest rank's figure.
double time_per_call(const MpiEnv& env, int warmup, int iters, const std::function<void()>& op,
                     const std::function<void()>& sync) {
  for (int i = 0; i < warmup; ++i) op();
  sync();
  RANKTUNE_MPI_CHECK(MPI_Barrier(env.world()));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  sync();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, env.world()));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  MpiEnv env(&argc, &argv);
  const std::int64_t max_bytes = argc > 1 ? std::atoll(argv[1]) : (std::int64_t{1} << 30);
  const int iters = argc > 2 ? std::atoi(argv[2]) : 20;
  const int device = env.local_rank();
  RANKTUNE_CUDA_CHECK(cudaSetDevice(device));
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  NcclCommunicator ours(env, device, 120);

  // The plain loop: its own blocking NCCL communicator, bootstrapped the same way, on the same stream.
  ncclUniqueId id;
  if (env.rank() == 0) RANKTUNE_NCCL_CHECK(ncclGetUniqueId(&id));
  RANKTUNE_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, env.world()));
  ncclComm_t plain;
  RANKTUNE_NCCL_CHECK(ncclCommInitRank(&plain, env.size(), id, env.rank()));
  // The same plain loop on a non-blocking communicator (what NcclCommunicator uses, for its timeouts), each call
  // spinning on ncclCommGetAsyncError until NCCL has enqueued it: NCCL's own cost of non-blocking mode, without ours.
  if (env.rank() == 0) RANKTUNE_NCCL_CHECK(ncclGetUniqueId(&id));
  RANKTUNE_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, env.world()));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t nonblocking;
  ncclResult_t state = ncclCommInitRankConfig(&nonblocking, env.size(), id, env.rank(), &config);
  const auto spin = [&] {
    do RANKTUNE_NCCL_CHECK(ncclCommGetAsyncError(nonblocking, &state));
    while (state == ncclInProgress);
    if (state != ncclSuccess) RANKTUNE_NCCL_CHECK(state);
  };
  spin();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();

  const int n = env.size();
  const double bus = 2.0 * (n - 1) / n;
  if (env.rank() == 0) {
    std::printf("all-reduce (sum, bf16) over %d rank(s); busbw = algbw x 2(n-1)/n%s\n\n", n,
                n > 1 ? "" : " = 0: at one rank an in-place all-reduce moves nothing, the times are call overheads");
    std::printf(
        "| bytes | ranktune us | ranktune busbw GB/s | NCCL us | NCCL busbw GB/s | ranktune / NCCL (busbw; 1 rank: "
        "speed) "
        "| NCCL non-blocking us |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
  }
  int early_returns = 0;
  for (std::int64_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
    at::Tensor t = at::ones({bytes / 2}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, device));
    const int it = bytes >= (std::int64_t{1} << 26) ? std::max(5, iters / 4) : iters;
    // synchronize() must return only once the stream has drained; a stream still busy then means it returned early.
    const double ours_s = time_per_call(
        env, 3, it, [&] { ours.all_reduce(t, ReduceOp::sum); },
        [&] {
          ours.synchronize();
          if (cudaStreamQuery(stream) != cudaSuccess) ++early_returns;
        });
    const double plain_s = time_per_call(
        env, 3, it,
        [&] {
          RANKTUNE_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), ncclBfloat16,
                                            ncclSum, plain, stream));
        },
        [&] { RANKTUNE_CUDA_CHECK(cudaStreamSynchronize(stream)); });
    const double nonblocking_s = time_per_call(
        env, 3, it,
        [&] {
          RANKTUNE_NCCL_CHECK(ncclGroupStart());
          RANKTUNE_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), ncclBfloat16,
                                            ncclSum, nonblocking, stream));
          RANKTUNE_NCCL_CHECK(ncclGroupEnd());  // ncclInProgress passes: spin() waits for the enqueue
          spin();
        },
        [&] { RANKTUNE_CUDA_CHECK(cudaStreamSynchronize(stream)); });
    const double ours_bw = static_cast<double>(bytes) / ours_s * bus / 1e9;
    const double plain_bw = static_cast<double>(bytes) / plain_s * bus / 1e9;
    if (env.rank() == 0)
      std::printf("| %lld | %.1f | %.1f | %.1f | %.1f | %.0f%% | %.1f |\n", static_cast<long long>(bytes), ours_s * 1e6,
                  ours_bw, plain_s * 1e6, plain_bw, n > 1 ? 100 * ours_bw / plain_bw : 100 * plain_s / ours_s,
                  nonblocking_s * 1e6);
  }
  RANKTUNE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &early_returns, 1, MPI_INT, MPI_SUM, env.world()));
  if (env.rank() == 0)
    std::printf("\nNcclCommunicator::synchronize() returned before its stream drained: %d time(s)%s\n", early_returns,
                early_returns ? " (its timings above are wrong)" : "");
  RANKTUNE_NCCL_CHECK(ncclCommDestroy(plain));
  RANKTUNE_NCCL_CHECK(ncclCommFinalize(nonblocking));
  spin();
  RANKTUNE_NCCL_CHECK(ncclCommDestroy(nonblocking));
  return 0;
}
