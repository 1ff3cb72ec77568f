// defines: MpiEnv, the MPI runtime for one process: init/finalize, world and node-local communicators, host name,
// abort; and mpi_library_version, for `ranktune --version`. Local rank/size come from
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), never from launcher variables.
#pragma once

#include <mpi.h>

#include <string>

namespace ranktune {

class MpiEnv {
 public:
  MpiEnv(int* argc, char*** argv);  // MPI_Init_thread unless MPI is already initialised (tests)
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  MPI_Comm world() const { return world_; }
  MPI_Comm local() const { return local_; }

  // Ends every rank of the job with this exit code (the launcher returns it).
  [[noreturn]] void abort(int code) const;

 private:
  bool owns_init_ = false;
  MPI_Comm world_ = MPI_COMM_NULL;
  MPI_Comm local_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
};

// The MPI library's own version string ("Open MPI v4.1.4, package: ..."); callable before MPI is initialised, so
// `ranktune --version` needs no MPI start-up. Empty when the library cannot say.
std::string mpi_library_version();

}  // namespace ranktune
