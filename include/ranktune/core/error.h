// defines: ranktune::Error and its subclasses, ExitCode (the documented process exit codes).
// Every failure a user can cause or fix is one of these; `main` turns them into a one-line message, an optional
// `hint:` line and the exit code below (docs/exit-codes.md lists them).
#pragma once

#include <stdexcept>
#include <string>

namespace ranktune {

enum class ExitCode : int {
  ok = 0,
  internal = 1,          // a bug or an unexpected library failure
  usage = 2,             // bad command line, config file or value; a mode the launch cannot run
  topology = 3,          // the machine cannot run what was asked: ranks share a GPU, more ranks than GPUs
  no_gpu = 4,            // --device=cuda and no GPU visible
  checkpoint = 5,        // checkpoint missing, damaged or incompatible
  comm = 6,              // communicator failure or collective timeout
  out_of_memory = 7,     // the plan or the run does not fit in device memory
  preempted_saved = 75,  // stopped by a signal after saving a checkpoint (EX_TEMPFAIL): requeue me
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& what, std::string hint = {})
      : std::runtime_error(what), code_(code), hint_(std::move(hint)) {}
  ExitCode code() const noexcept { return code_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  ExitCode code_;
  std::string hint_;
};

#define RANKTUNE_DEFINE_ERROR(Name, code_value)                   \
  class Name : public Error {                                     \
   public:                                                        \
    explicit Name(const std::string& what, std::string hint = {}) \
        : Error(ExitCode::code_value, what, std::move(hint)) {}   \
  }

RANKTUNE_DEFINE_ERROR(UsageError, usage);
RANKTUNE_DEFINE_ERROR(ConfigError, usage);
RANKTUNE_DEFINE_ERROR(TopologyError, topology);
RANKTUNE_DEFINE_ERROR(NoGpuError, no_gpu);
RANKTUNE_DEFINE_ERROR(CheckpointError, checkpoint);
// A Hugging Face model directory (model.path) that is missing, incomplete or does not match its config.json: an input
// the user gave, not a damaged training checkpoint, so a usage error (the fix is another --model.path).
RANKTUNE_DEFINE_ERROR(ModelDirError, usage);
RANKTUNE_DEFINE_ERROR(CommError, comm);
RANKTUNE_DEFINE_ERROR(OutOfMemoryError, out_of_memory);
RANKTUNE_DEFINE_ERROR(LibraryError, internal);

#undef RANKTUNE_DEFINE_ERROR

// The mode the user asked for cannot run under the launch they used (balanced under mpirun -np 2, ...).
// A usage error: the fix is a different command line.
class LaunchModeError : public Error {
 public:
  explicit LaunchModeError(const std::string& what, std::string hint = {})
      : Error(ExitCode::usage, what, std::move(hint)) {}
};

const char* exit_code_name(ExitCode code) noexcept;

}  // namespace ranktune
