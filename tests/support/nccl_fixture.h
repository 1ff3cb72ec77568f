// defines: NcclFixture, the set-up of every GPU test that needs an NCCL communicator: one GPU per rank on its node
// (cuda:<local rank>), skipped on every rank alike where any rank sees no GPU or its node has fewer GPUs than ranks,
// so that no rank waits for another in the NCCL bootstrap.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>

#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/nccl_communicator.h"

namespace ranktune {

class NcclFixture : public testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t rc = cudaGetDeviceCount(&count);
    const int have = rc == cudaSuccess ? count : 0;
    int min_have = 0;
    MPI_Allreduce(&have, &min_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (min_have == 0) GTEST_SKIP() << "no GPU visible (" << cudaGetErrorString(rc) << ")";
    env = std::make_unique<MpiEnv>(nullptr, nullptr);
    if (min_have < env->local_size()) GTEST_SKIP() << "fewer GPUs than ranks on this node";
    comm = std::make_unique<NcclCommunicator>(*env, env->local_rank(), 60.0);
    dev = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env->local_rank()));
  }
  std::unique_ptr<MpiEnv> env;
  std::unique_ptr<NcclCommunicator> comm;
  at::Device dev{at::kCPU};
};

}  // namespace ranktune
