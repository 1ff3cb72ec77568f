// defines: RANKTUNE_NCCL_CHECK, the generic check instantiated for NCCL; the message carries ncclGetErrorString
// and ncclGetLastError (NCCL's own explanation of the last failure).
#pragma once

#include <nccl.h>

#include <string>

#include "ranktune/core/check.h"
#include "ranktune/core/error.h"

namespace ranktune::detail {
inline bool nccl_ok(ncclResult_t rc) { return rc == ncclSuccess || rc == ncclInProgress; }
inline std::string nccl_error_string(ncclResult_t rc) {
  std::string s = ncclGetErrorString(rc);
  if (const char* last = ncclGetLastError(nullptr); last && *last) s += "; " + std::string(last);
  return s;
}
}  // namespace ranktune::detail

#define RANKTUNE_NCCL_CHECK(call)                                                                      \
  RANKTUNE_CHECK_GEN("NCCL", call, ::ranktune::detail::nccl_ok, ::ranktune::detail::nccl_error_string, \
                     ::ranktune::CommError)
