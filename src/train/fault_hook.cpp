// The test hook's parsing and firing, kept out of the trainer so that the loop shows one call.
#include "ranktune/train/fault_hook.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {
constexpr const char* kVar = "RANKTUNE_TEST_FAIL_AT_STEP";
}

FaultHook fault_hook_from_env(int rank) {
  const char* v = std::getenv(kVar);
  if (!v || !*v) return {};
  long r = -1, step = 0;
  int used = 0;
  const bool parsed = std::sscanf(v, "%ld:%ld%n", &r, &step, &used) == 2 && r >= 0 && step > 0 &&
                      (v[used] == '\0' || std::strcmp(v + used, ":exit") == 0);
  if (!parsed)
    throw UsageError(std::string(kVar) + "='" + v + "' is not RANK:STEP or RANK:STEP:exit",
                     "it is a test hook: unset it for real runs");
  if (r != rank) return {};
  return {step, v[used] != '\0'};
}

void fault_hook_fire(const FaultHook& hook, int rank, long step) {
  if (hook.step == 0 || step != hook.step) return;
  const std::string what = std::string(kVar) + ": rank " + std::to_string(rank) + " fails at step " +
                           std::to_string(step) + (hook.exit ? " with exit(1)" : "");
  if (!hook.exit) throw Error(ExitCode::internal, what);
  std::fprintf(stderr, "ranktune: %s\n", what.c_str());  // exit() bypasses main's error report
  std::exit(1);
}

}  // namespace ranktune
