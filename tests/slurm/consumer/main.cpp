// Links ranktune_core from an install prefix and calls into it: the exit code the Slurm scripts requeue on, and
// the stop-request agreement over MPI (one process).
#include <cstdio>

#include "ranktune/core/error.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/signals.h"

int main(int argc, char** argv) {
  ranktune::signals_install();
  ranktune::MpiEnv env(&argc, &argv);
  const auto stop = ranktune::signals_agree(env);
  std::printf("consumer: exit %d means '%s'; world %d; %s\n", static_cast<int>(ranktune::ExitCode::preempted_saved),
              ranktune::exit_code_name(ranktune::ExitCode::preempted_saved), env.size(),
              ranktune::stop_agreement_describe(stop).c_str());
  return 0;
}
