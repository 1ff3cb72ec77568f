// signal_probe: the trainer's step loop without the training, built from ranktune's real MpiEnv and signals. The
// Slurm tests run it through slurm/*.sbatch (RANKTUNE_BIN=signal_probe) to exercise what the scripts must do
// before the trainer exists: forward SIGUSR1 to every rank, requeue on exit 75 only, pass --resume=auto, and end a
// step whose rank was killed. It saves nothing; it says what it would do.
//   RANKTUNE_PROBE_STEPS (default 50), RANKTUNE_PROBE_STEP_MS (default 100): the loop.
// Prints "probe: rank R pid P", one "probe: step S" line per step (rank 0), "probe: rank R has a stop request at step
// S" on the rank(s) a signal reached, and on an agreed stop "probe: stop at step S: <why>" before exiting with
// ExitCode::preempted_saved.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "ranktune/core/error.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/signals.h"

namespace {

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

bool handler_installed(int sig) {
  struct sigaction sa {};
  return sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ranktune;
  signals_install();  // before MPI_Init: a SIGUSR1 during start-up must not kill the rank
  MpiEnv env(&argc, &argv);
  const long steps = env_long("RANKTUNE_PROBE_STEPS", 50);
  const long step_ms = env_long("RANKTUNE_PROBE_STEP_MS", 100);
  if (!handler_installed(SIGUSR1) || !handler_installed(SIGTERM)) {
    std::fprintf(stderr, "probe: rank %d: MPI_Init replaced the SIGUSR1/SIGTERM handlers\n", env.rank());
    return static_cast<int>(ExitCode::internal);
  }
  std::printf("probe: rank %d pid %d host %s\n", env.rank(), static_cast<int>(getpid()), env.host().c_str());
  if (env.rank() == 0) {
    std::string args;
    for (int i = 1; i < argc; ++i) args += std::string(i > 1 ? " " : "") + argv[i];
    const char* restarts = std::getenv("SLURM_RESTART_COUNT");
    std::printf("probe: start world=%d restart=%s args=%s\n", env.size(), restarts ? restarts : "0", args.c_str());
  }
  std::fflush(stdout);
  signals_hold_term(true);  // from here on there is something to save, as in the trainer's step loop
  bool seen = false;
  for (long step = 1; step <= steps; ++step) {
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
    if (!seen && signals_pending() != StopRequest::none) {
      seen = true;
      std::printf("probe: rank %d has a stop request at step %ld\n", env.rank(), step);
    }
    const StopAgreement stop = signals_agree(env);
    if (stop.request != StopRequest::none) {
      if (env.rank() == 0) std::printf("probe: stop at step %ld: %s\n", step, stop_agreement_describe(stop).c_str());
      std::fflush(stdout);
      return static_cast<int>(ExitCode::preempted_saved);
    }
    if (env.rank() == 0) std::printf("probe: step %ld\n", step);
    std::fflush(stdout);
  }
  if (env.rank() == 0) std::printf("probe: done after %ld steps\n", steps);
  return 0;
}
