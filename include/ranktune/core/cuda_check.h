// defines: RANKTUNE_CUDA_CHECK, the generic check instantiated for the CUDA runtime.
#pragma once

#include <cuda_runtime_api.h>

#include "ranktune/core/check.h"
#include "ranktune/core/error.h"

namespace ranktune::detail {
inline bool cuda_ok(cudaError_t rc) { return rc == cudaSuccess; }
inline const char* cuda_error_string(cudaError_t rc) { return cudaGetErrorString(rc); }
}  // namespace ranktune::detail

#define RANKTUNE_CUDA_CHECK(call)                                                                      \
  RANKTUNE_CHECK_GEN("CUDA", call, ::ranktune::detail::cuda_ok, ::ranktune::detail::cuda_error_string, \
                     ::ranktune::LibraryError)
