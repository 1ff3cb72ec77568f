// defines: FaultHook, a TEST HOOK (not for production runs): RANKTUNE_TEST_FAIL_AT_STEP=RANK:STEP[:KIND] makes rank
// RANK fail at optimizer step STEP, so tests can show that one rank failing mid-run ends the whole job (no KIND: an
// Error, as a failing read of its data would, and main aborts every rank; `exit`: std::exit(1) without finalising
// MPI, and the launcher must end the rest), and that a non-finite gradient stops the run before that step is logged
// or committed (`nan_grad`, `inf_grad`), and `oom`: LibTorch's c10::OutOfMemoryError as the CUDA allocator throws it,
// so that the report of a run out of device memory is tested without a GPU. Read once when the trainer starts;
// unset (every real run) it does nothing.
#pragma once

#include "ranktune/distributed/named_tensors.h"
#include "ranktune/io/checkpoint.h"

namespace ranktune {

enum class FaultKind { error, exit, nan_grad, inf_grad, oom };

struct FaultHook {
  long step = 0;  // 0: no fault on this rank
  FaultKind kind = FaultKind::error;
  // RANKTUNE_TEST_STEP_SLEEP_MS=MS (every rank): each optimizer step starts with a sleep of MS, so that a signal test
  // can land its signal mid-run however loaded the machine; the numbers stay those of an unpaced run.
  long step_sleep_ms = 0;
};

// The hook for this rank from the environment; UsageError naming the variable when its value is malformed.
FaultHook fault_hook_from_env(int rank);

// Sleeps step_sleep_ms; then fails (throws, or exits) as optimizer step `step` starts when it is the hook's step and
// the kind is error, exit or oom.
void fault_hook_fire(const FaultHook& hook, int rank, long step);

// For nan_grad / inf_grad at the hook's step: writes NaN / +inf into one element of the first gradient of `params`,
// as an overflowing kernel would. Called once the gradients are complete (reduced, in DDP), before their norm.
void fault_hook_poison_grads(const FaultHook& hook, long step, const NamedTensors& params);

// TEST HOOK (not for production runs): RANKTUNE_TEST_SAVE_FAULT=RANK:STEP:PHASE:fail|sleep=MS acts on rank RANK in
// the save of step STEP at SavePhase PHASE (save_phase_name: rank_file_begin, ..., before_prune): `fail` throws,
// an ordinary failure of that phase (the save fails, training goes on); `sleep=MS` holds the save there, so that a
// test can signal or kill the process in the middle of it (checkpoint.async: inside the background write). Empty
// (no hook) when unset or for another rank or step; UsageError naming the variable when malformed.
SaveFaultHook save_fault_hook_from_env(int rank, long step);

}  // namespace ranktune
