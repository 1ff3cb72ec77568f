// defines: SharedScratchDir, the ScratchDir of an MPI test: one directory for all ranks (a checkpoint is written by
// every rank into the same step directory), named after rank 0's pid, created by rank 0 before any rank returns from
// the constructor and removed by rank 0 once every rank has reached the destructor. Both are collective.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"
#include "support/scratch_dir.h"

namespace ranktune::test {

class SharedScratchDir {
 public:
  SharedScratchDir(const MpiEnv& env, const std::string& tag) : env_(env) {
    std::int64_t pid = ::getpid();
    host::broadcast(env, pid);
    path_ = ScratchDir::path_for(tag, pid);
    if (env.rank() == 0) {
      ScratchDir::remove(path_);
      std::filesystem::create_directories(path_);
    }
    host::barrier(env);
  }
  ~SharedScratchDir() {
    host::barrier(env_);
    if (env_.rank() == 0) ScratchDir::remove(path_);
  }
  SharedScratchDir(const SharedScratchDir&) = delete;
  SharedScratchDir& operator=(const SharedScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  const MpiEnv& env_;
  std::filesystem::path path_;
};

}  // namespace ranktune::test
