// defines: StopRequest, signals_install (SIGUSR1/SIGTERM handlers that only set a flag), signals_pending (this
// process's flag) and signals_agree (the step-boundary all-reduce after which every rank acts on the same request).
// Slurm and mpirun may signal only some ranks, or signal them at different instants; a rank that stopped alone would
// leave the others waiting in the next collective. So nobody acts on its own flag: all ranks call signals_agree at
// the same step boundary and get the same answer. Exit codes and the batch-script side: docs/slurm.md.
#pragma once

#include <string>

namespace ranktune {

class MpiEnv;

// Ordered by urgency: when ranks saw different signals, the most urgent wins.
enum class StopRequest : int {
  none = 0,
  checkpoint_and_exit = 1,  // SIGUSR1 (#SBATCH --signal=B:USR1@T, forwarded by the batch script): save a
                            // checkpoint at the next step boundary, exit with ExitCode::preempted_saved (75)
  save_best_effort = 2,     // SIGTERM (scancel, time limit, preemption): SIGKILL follows after Slurm's KillWait,
                            // so save if there is time, then exit
};

const char* stop_request_name(StopRequest r) noexcept;

// Installs the handlers for SIGUSR1 and SIGTERM in this process, then unblocks both in the calling thread. Call it
// first thing in main: SIGUSR1's default action kills the process, and Slurm signals every process of the step.
// main runs only after LibTorch has loaded (0.3 s, seconds from a network filesystem), so the launcher bin/ranktune
// (src/app/launcher.cpp) execs the program with SIGUSR1 blocked: one sent meanwhile stays pending and is delivered,
// and recorded, when this unblocks it. Idempotent.
void signals_install();

// While held, SIGTERM only records save_best_effort, for the next step boundary. While not held (the default, and
// whenever there is nothing to save: start-up, `ranktune topology`), SIGTERM terminates the process as if no handler
// were installed, so `kill`, `timeout` and scancel stop it at once. SIGUSR1 is always recorded.
void signals_hold_term(bool hold) noexcept;

// This process's request, without communication (the strongest signal received since start or the last clear).
StopRequest signals_pending() noexcept;

// Forgets what was received (tests; a trainer never clears a stop request).
void signals_clear() noexcept;

struct StopAgreement {
  StopRequest request = StopRequest::none;
  int rank = -1;  // lowest rank that received `request`; -1 when none did
};

// Collective over env.world(): every rank must call it at the same step boundary (host::worst of the requests).
StopAgreement signals_agree(const MpiEnv& env);

// "SIGUSR1 on rank 3: checkpoint and exit" (for the log line that explains why the run stops).
std::string stop_agreement_describe(const StopAgreement& a);

}  // namespace ranktune
