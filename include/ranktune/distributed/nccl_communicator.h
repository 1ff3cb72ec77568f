// defines: NcclCommunicator, collectives on CUDA tensors over a non-blocking NCCL communicator bootstrapped over MPI
// (cudaSetDevice -> rank 0 ncclGetUniqueId -> MPI_Bcast -> ncclCommInitRankConfig). Collectives run on the
// calling thread's current PyTorch CUDA stream; synchronize() waits with a deadline and aborts the communicator
// when it passes, so a dead peer produces an error instead of a hang.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const MpiEnv& env, int device, double timeout_s);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return env_.rank(); }
  int size() const override { return env_.size(); }
  std::string name() const override { return "nccl"; }
  int device() const { return device_; }
  void all_reduce(const at::Tensor& t, ReduceOp op) override;
  void broadcast(const at::Tensor& t, int root) override;
  void all_gather(const at::Tensor& in, const at::Tensor& out) override;
  void barrier() override;
  void synchronize() override;

 private:
  cudaStream_t stream_for(const at::Tensor& t) const;
  void wait_enqueued(const char* what);       // non-blocking NCCL: wait until the call has been enqueued
  void end_group_and_wait(const char* what);  // ncclGroupEnd of a one-collective group, then wait_enqueued
  [[noreturn]] void abort_with(const std::string& what);

  const MpiEnv& env_;
  int device_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
  cudaStream_t last_stream_ = nullptr;  // where the latest collective ran (null is the default stream)
  bool issued_ = false;                 // a collective has been issued since construction
};

}  // namespace ranktune
