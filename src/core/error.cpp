// Names of the exit codes (printed with every fatal message) and the host name used by check failures.
#include "ranktune/core/error.h"
#include "ranktune/core/check.h"

#include <unistd.h>

#include <array>

namespace ranktune {

const char* exit_code_name(ExitCode code) noexcept {
  switch (code) {
    case ExitCode::ok: return "ok";
    case ExitCode::internal: return "internal error";
    case ExitCode::usage: return "usage or configuration error";
    case ExitCode::topology: return "topology refused";
    case ExitCode::no_gpu: return "no GPU visible";
    case ExitCode::checkpoint: return "checkpoint missing or damaged";
    case ExitCode::comm: return "communicator failure";
    case ExitCode::out_of_memory: return "out of device memory";
    case ExitCode::preempted_saved: return "preempted, checkpoint saved";
  }
  return "unknown";
}

namespace detail {
std::string check_host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown-host";
  return buf.data();
}
}  // namespace detail

}  // namespace ranktune
