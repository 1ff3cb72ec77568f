// defines: FaultHook, a TEST HOOK (not for production runs): RANKTUNE_TEST_FAIL_AT_STEP=RANK:STEP[:exit] makes rank
// RANK fail as it starts optimizer step STEP, so tests can show that one rank failing mid-run ends the whole job.
// By default it throws an Error, as a failing read of its data would, and main aborts every rank; with `:exit` it
// calls std::exit(1) without finalising MPI, as a library that gives up would, and the launcher must end the rest.
// Read once when the trainer starts; unset (every real run) it does nothing.
#pragma once

namespace ranktune {

struct FaultHook {
  long step = 0;  // 0: no fault on this rank
  bool exit = false;
};

// The hook for this rank from the environment; UsageError naming the variable when its value is malformed.
FaultHook fault_hook_from_env(int rank);

// Fails (throws, or exits) when `step` is the hook's step; nothing otherwise.
void fault_hook_fire(const FaultHook& hook, int rank, long step);

}  // namespace ranktune
