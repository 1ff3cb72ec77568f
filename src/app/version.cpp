// `ranktune --version`: our version and the run-time versions of the libraries that matter on a cluster.
#include <hdf5.h>
#include <torch/version.h>

#include <string>

#include "ranktune/app/commands.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/version.h"
#ifdef RANKTUNE_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace ranktune {

std::string version_string() {
  std::string s = "ranktune " RANKTUNE_VERSION " (LibTorch " TORCH_VERSION;
#ifdef RANKTUNE_HAVE_CUDA
  int rt = 0, drv = 0, nccl = 0;
  if (cudaRuntimeGetVersion(&rt) == cudaSuccess)
    s += ", CUDA runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10);
  if (cudaDriverGetVersion(&drv) == cudaSuccess && drv > 0)
    s += ", driver API " + std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10);
  else s += ", no CUDA driver";
  if (ncclGetVersion(&nccl) == ncclSuccess)
    s += ", NCCL " + std::to_string(nccl / 10000) + "." + std::to_string(nccl / 100 % 100) + "." +
         std::to_string(nccl % 100);
#else
  s += ", built without CUDA";
#endif
  const std::string mpi = mpi_library_version();
  if (!mpi.empty()) s += ", " + mpi.substr(0, mpi.find(','));
  unsigned maj = 0, min = 0, rel = 0;
  if (H5get_libversion(&maj, &min, &rel) >= 0)
    s += ", HDF5 " + std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
  return s + ")";
}

}  // namespace ranktune
