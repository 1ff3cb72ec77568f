// NCCL bootstrap over MPI and the NCCL communicator's collectives. Skips where no GPU is visible; run on the GPU
// machine (bench/gpu_check.sh) at world size 1, and at more ranks wherever there are as many GPUs.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>

#include "ranktune/core/error.h"
#include "ranktune/distributed/nccl_communicator.h"
#include "support/nccl_fixture.h"

namespace ranktune {
namespace {

using NcclTest = NcclFixture;

TEST_F(NcclTest, AllReduceFloatAndBf16) {
  const int n = env->size(), r = env->rank();
  at::Tensor f = at::arange(1 << 20, at::TensorOptions(dev).dtype(at::kFloat)) + r;
  comm->all_reduce(f, ReduceOp::sum);
  comm->synchronize();
  // synchronize() returns only once the stream has drained (the default stream, whose handle is null, included).
  EXPECT_EQ(cudaStreamQuery(c10::cuda::getCurrentCUDAStream(dev.index()).stream()), cudaSuccess);
  at::Tensor want = at::arange(1 << 20, at::kFloat) * n + n * (n - 1) / 2.0;
  EXPECT_TRUE(at::allclose(f.cpu(), want));
  at::Tensor b = at::full({4096}, 1.0 + r, at::TensorOptions(dev).dtype(at::kBFloat16));
  comm->all_reduce(b, ReduceOp::avg);
  comm->synchronize();
  EXPECT_TRUE(at::allclose(b.cpu().to(at::kFloat), at::full({4096}, 1.0 + (n - 1) / 2.0), 0, 1e-2));
}

TEST_F(NcclTest, BroadcastAndAllGather) {
  const int n = env->size(), r = env->rank();
  at::Tensor t = r == 0 ? at::arange(100, at::TensorOptions(dev).dtype(at::kFloat))
                        : at::zeros({100}, at::TensorOptions(dev).dtype(at::kFloat));
  comm->broadcast(t, 0);
  at::Tensor in = at::full({8}, static_cast<double>(r), at::TensorOptions(dev).dtype(at::kFloat));
  at::Tensor out = at::empty({n, 8}, at::TensorOptions(dev).dtype(at::kFloat));
  comm->all_gather(in, out);
  comm->synchronize();
  EXPECT_TRUE(at::equal(t.cpu(), at::arange(100, at::kFloat)));
  for (int i = 0; i < n; ++i) EXPECT_TRUE(at::equal(out[i].cpu(), at::full({8}, static_cast<double>(i))));
}

// A peer that never joins a collective: the waiting rank's synchronize() gives up at the deadline, aborts the
// communicator and throws, instead of hanging (needs one GPU per rank, so at least 2 GPUs).
TEST_F(NcclTest, StuckPeerEndsInCommErrorAtTheDeadline) {
  if (env->size() < 2) GTEST_SKIP() << "needs 2 ranks, one GPU each";
  comm.reset();
  constexpr double timeout_s = 3.0;
  comm = std::make_unique<NcclCommunicator>(*env, env->local_rank(), timeout_s);
  if (env->rank() == 0) {
    at::Tensor t = at::ones({1024}, at::TensorOptions(dev).dtype(at::kFloat));
    const auto start = std::chrono::steady_clock::now();
    // With lazy connection set-up the enqueue itself may be what waits for the peer: either call may throw.
    EXPECT_THROW(
        {
          comm->all_reduce(t, ReduceOp::sum);
          comm->synchronize();
        },
        CommError);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "rank 0: collective abandoned after " << waited << " s (timeout " << timeout_s << " s)\n";
    EXPECT_GE(waited, timeout_s);
    EXPECT_LT(waited, timeout_s + 10.0);
    EXPECT_THROW(comm->synchronize(), CommError);  // an aborted communicator stays unusable, loudly
  }
  MPI_Barrier(MPI_COMM_WORLD);  // the other ranks never entered the collective
}

TEST_F(NcclTest, RejectsCpuTensor) {
  at::Tensor cpu = at::zeros({4});
  EXPECT_THROW(comm->all_reduce(cpu, ReduceOp::sum), CommError);
}

}  // namespace
}  // namespace ranktune
