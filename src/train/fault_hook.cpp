// The test hook's parsing and firing, kept out of the trainer so that the loop shows one call per place it can fail.
#include "ranktune/train/fault_hook.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {
constexpr const char* kVar = "RANKTUNE_TEST_FAIL_AT_STEP";

bool kind_from_suffix(const char* suffix, FaultKind& kind) {
  static const struct {
    const char* text;
    FaultKind kind;
  } kKinds[] = {{"", FaultKind::error},
                {":exit", FaultKind::exit},
                {":nan_grad", FaultKind::nan_grad},
                {":inf_grad", FaultKind::inf_grad},
                {":oom", FaultKind::oom}};
  for (const auto& k : kKinds) {
    if (std::strcmp(suffix, k.text) == 0) {
      kind = k.kind;
      return true;
    }
  }
  return false;
}

long step_sleep_ms_from_env() {
  constexpr const char* kSleepVar = "RANKTUNE_TEST_STEP_SLEEP_MS";
  const char* v = std::getenv(kSleepVar);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long ms = std::strtol(v, &end, 10);
  if (*end != '\0' || ms < 0 || ms > 60'000)
    throw UsageError(std::string(kSleepVar) + "='" + v + "' is not a number of milliseconds (0-60000)",
                     "it is a test hook: unset it for real runs");
  return ms;
}
}  // namespace

FaultHook fault_hook_from_env(int rank) {
  FaultHook hook;
  hook.step_sleep_ms = step_sleep_ms_from_env();
  const char* v = std::getenv(kVar);
  if (!v || !*v) return hook;
  long r = -1, step = 0;
  int used = 0;
  FaultKind kind = FaultKind::error;
  const bool parsed = std::sscanf(v, "%ld:%ld%n", &r, &step, &used) == 2 && r >= 0 && step > 0 &&
                      kind_from_suffix(v + used, kind);
  if (!parsed)
    throw UsageError(std::string(kVar) + "='" + v + "' is not RANK:STEP or RANK:STEP:exit|nan_grad|inf_grad|oom",
                     "it is a test hook: unset it for real runs");
  if (r != rank) return hook;
  hook.step = step;
  hook.kind = kind;
  return hook;
}

void fault_hook_fire(const FaultHook& hook, int rank, long step) {
  if (hook.step_sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(hook.step_sleep_ms));
  if (hook.step == 0 || step != hook.step) return;
  if (hook.kind == FaultKind::oom)  // the allocator's exception, with the text of a CUDA allocation that failed
    C10_THROW_ERROR(OutOfMemoryError,
                    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                    "79.19 GiB of which 1.06 GiB is free. (" +
                        std::string(kVar) + ": rank " + std::to_string(rank) + " at step " + std::to_string(step) +
                        ")");
  if (hook.kind != FaultKind::error && hook.kind != FaultKind::exit) return;
  const bool exit = hook.kind == FaultKind::exit;
  const std::string what = std::string(kVar) + ": rank " + std::to_string(rank) + " fails at step " +
                           std::to_string(step) + (exit ? " with exit(1)" : "");
  if (!exit) throw Error(ExitCode::internal, what);
  std::fprintf(stderr, "ranktune: %s\n", what.c_str());  // exit() bypasses main's error report
  std::exit(1);
}

void fault_hook_poison_grads(const FaultHook& hook, long step, const NamedTensors& params) {
  if (hook.step == 0 || step != hook.step) return;
  if (hook.kind != FaultKind::nan_grad && hook.kind != FaultKind::inf_grad) return;
  const double bad = hook.kind == FaultKind::nan_grad ? std::numeric_limits<double>::quiet_NaN()
                                                      : std::numeric_limits<double>::infinity();
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    const at::Tensor& grad = item.value().grad();
    if (!grad.defined() || grad.numel() == 0) continue;
    at::Tensor first = grad;  // a view of the first element, whatever the layout: the write reaches the gradient
    while (first.dim() > 0) first = first.select(0, 0);
    first.fill_(bad);
    return;
  }
  throw Error(ExitCode::internal, std::string(kVar) + ": step " + std::to_string(step) + " has no gradient to poison");
}

SaveFaultHook save_fault_hook_from_env(int rank, long step) {
  constexpr const char* kSaveVar = "RANKTUNE_TEST_SAVE_FAULT";
  const char* v = std::getenv(kSaveVar);
  if (!v || !*v) return {};
  long r = -1, at = 0, ms = 0;
  int used = 0;
  char phase_text[40] = {0};
  bool parsed = std::sscanf(v, "%ld:%ld:%39[a-z_]%n", &r, &at, phase_text, &used) == 3 && r >= 0 && at > 0;
  const char* action = v + used;
  const bool fail = parsed && std::strcmp(action, ":fail") == 0;
  int tail = 0;
  parsed = parsed && (fail || (std::sscanf(action, ":sleep=%ld%n", &ms, &tail) == 1 && ms >= 0 && !action[tail]));
  SavePhase phase{};
  bool known = false;
  for (SavePhase p : kAllSavePhases)
    if (std::strcmp(save_phase_name(p), phase_text) == 0) phase = p, known = true;
  if (!parsed || !known)
    throw UsageError(std::string(kSaveVar) + "='" + v + "' is not RANK:STEP:PHASE:fail or RANK:STEP:PHASE:sleep=MS " +
                         "with PHASE a save phase (rank_file_written, before_manifest, latest_written, ...)",
                     "it is a test hook: unset it for real runs");
  if (r != rank || at != step) return {};
  return [phase, fail, ms, at, rank](SavePhase now) {
    if (now != phase) return;
    if (fail)
      throw std::runtime_error(std::string(kSaveVar) + ": rank " + std::to_string(rank) + " fails the save of step " +
                               std::to_string(at) + " at " + save_phase_name(now));
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  };
}

}  // namespace ranktune
