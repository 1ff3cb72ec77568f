// defines: RANKTUNE_MPI_CHECK, the generic check instantiated for MPI (communicators use MPI_ERRORS_RETURN).
#pragma once

#include <mpi.h>

#include <string>

#include "ranktune/core/check.h"
#include "ranktune/core/error.h"

namespace ranktune::detail {
inline bool mpi_ok(int rc) { return rc == MPI_SUCCESS; }
inline std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(buf, static_cast<std::size_t>(len));
}
}  // namespace ranktune::detail

#define RANKTUNE_MPI_CHECK(call)                                                                    \
  RANKTUNE_CHECK_GEN("MPI", call, ::ranktune::detail::mpi_ok, ::ranktune::detail::mpi_error_string, \
                     ::ranktune::CommError)
