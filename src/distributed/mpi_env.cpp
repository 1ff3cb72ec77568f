// MPI start-up: a duplicated world communicator with MPI_ERRORS_RETURN (so every call is checked, not fatal) and
// the node-local communicator from MPI_Comm_split_type.
#include "ranktune/distributed/mpi_env.h"

#include <cstdlib>

#include "ranktune/distributed/mpi_check.h"

namespace ranktune {

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int initialized = 0;
  RANKTUNE_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    RANKTUNE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_init_ = true;
  }
  RANKTUNE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_));
  RANKTUNE_MPI_CHECK(MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN));
  RANKTUNE_MPI_CHECK(MPI_Comm_rank(world_, &rank_));
  RANKTUNE_MPI_CHECK(MPI_Comm_size(world_, &size_));
  RANKTUNE_MPI_CHECK(MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_));
  RANKTUNE_MPI_CHECK(MPI_Comm_set_errhandler(local_, MPI_ERRORS_RETURN));
  RANKTUNE_MPI_CHECK(MPI_Comm_rank(local_, &local_rank_));
  RANKTUNE_MPI_CHECK(MPI_Comm_size(local_, &local_size_));
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  RANKTUNE_MPI_CHECK(MPI_Get_processor_name(name, &len));
  host_.assign(name, static_cast<std::size_t>(len));
}

MpiEnv::~MpiEnv() {
  // Destructors must not throw: failures here are ignored, the process is ending anyway.
  if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
  if (world_ != MPI_COMM_NULL) MPI_Comm_free(&world_);
  if (owns_init_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

std::string mpi_library_version() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(version, &len) != MPI_SUCCESS) return "";
  return std::string(version, static_cast<std::size_t>(len));
}

void MpiEnv::abort(int code) const {
  MPI_Abort(world_ != MPI_COMM_NULL ? world_ : MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort should not return; make sure the process ends if it does
}

}  // namespace ranktune
