// defines: RANKTUNE_CHECK_GEN, the one generic check for C library calls.
// Each library wrapper (cuda_check.h, nccl_check.h, mpi_check.h, h5.h) instantiates it with its success test and
// error-string function, so every failed call reports library, call text, file:line, code and the library's words.
#pragma once

#include <sstream>
#include <string>

namespace ranktune::detail {

std::string check_host_name();

template <class Err>
[[noreturn]] void check_fail(const char* lib, const char* call, long long code, const std::string& lib_msg,
                             const char* file, int line) {
  std::ostringstream os;
  os << lib << " error " << code << " (" << lib_msg << ") in `" << call << "` at " << file << ':' << line << " on "
     << check_host_name();
  throw Err(os.str());
}

}  // namespace ranktune::detail

// lib: a string naming the library; call: the expression; ok(rc): success test; msg(rc): std::string-convertible
// description; Err: the ranktune::Error subclass to throw.
#define RANKTUNE_CHECK_GEN(lib, call, ok, msg, Err)                                            \
  do {                                                                                         \
    const auto ranktune_rc_ = (call);                                                          \
    if (!(ok(ranktune_rc_))) {                                                                 \
      ::ranktune::detail::check_fail<Err>(lib, #call, static_cast<long long>(ranktune_rc_),    \
                                          std::string(msg(ranktune_rc_)), __FILE__, __LINE__); \
    }                                                                                          \
  } while (0)
