// defines: MpiCommunicator, collectives on CPU tensors over MPI (blocking, so synchronize() is a no-op).
// bf16/fp16 are reduced in fp32 and rounded back; avg is sum / size.
#pragma once

#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const MpiEnv& env);
  int rank() const override { return env_.rank(); }
  int size() const override { return env_.size(); }
  std::string name() const override { return "mpi"; }
  void all_reduce(const at::Tensor& t, ReduceOp op) override;
  void broadcast(const at::Tensor& t, int root) override;
  void all_gather(const at::Tensor& in, const at::Tensor& out) override;
  void barrier() override;
  void synchronize() override {}

 private:
  const MpiEnv& env_;
};

}  // namespace ranktune
