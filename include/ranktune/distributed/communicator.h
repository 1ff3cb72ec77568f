// defines: Communicator, the collectives the trainer needs, with two implementations: MpiCommunicator (CPU tensors,
// used with --device=cpu and in tests) and NcclCommunicator (CUDA tensors). communicator_create picks one from the
// mode decision. Tensors are at::Tensor handles: collectives work in place on contiguous tensors.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace ranktune {

class MpiEnv;
struct ModeDecision;

enum class ReduceOp { sum, avg, max, min };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;

  virtual void all_reduce(const at::Tensor& t, ReduceOp op) = 0;
  virtual void broadcast(const at::Tensor& t, int root) = 0;
  // Every rank's tensor (same shape and dtype on all ranks) stacked along a new first dimension into `out`.
  virtual void all_gather(const at::Tensor& in, const at::Tensor& out) = 0;
  virtual void barrier() = 0;
  // Waits until every collective issued so far has finished; a collective that does not finish within the timeout
  // aborts the communicator and throws CommError (exit code 6) instead of hanging.
  virtual void synchronize() = 0;
};

std::unique_ptr<Communicator> communicator_create(const MpiEnv& env, const ModeDecision& mode, double timeout_s);

}  // namespace ranktune
