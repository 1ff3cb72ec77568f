// Chooses the communicator: NCCL when the ranks drive GPUs, MPI on CPU.
#include "ranktune/distributed/communicator.h"

#include "ranktune/core/error.h"
#include "ranktune/distributed/mpi_communicator.h"
#include "ranktune/distributed/parallel_mode.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "ranktune/distributed/nccl_communicator.h"
#endif

namespace ranktune {

std::unique_ptr<Communicator> communicator_create(const MpiEnv& env, const ModeDecision& mode, double timeout_s) {
  if (!mode.on_gpu) return std::make_unique<MpiCommunicator>(env);
#ifdef RANKTUNE_HAVE_CUDA
  return std::make_unique<NcclCommunicator>(env, mode.device_of_rank.at(env.rank()), timeout_s);
#else
  (void)timeout_s;
  throw UsageError("this ranktune was built without CUDA; run with --device=cpu or rebuild with RANKTUNE_WITH_CUDA=ON");
#endif
}

}  // namespace ranktune
