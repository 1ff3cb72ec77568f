// Outcome agreement through host collectives: the lowest failing rank (a MIN over ranks, the size when none failed),
// then that rank broadcasts its message, code and hint.
#include "ranktune/distributed/agree.h"

#include <c10/util/Exception.h>

#include <vector>

#include "ranktune/core/text.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {

void agree_run(const MpiEnv& env, const std::function<void()>& phase) {
  int code = 0;
  std::string what, hint;
  try {
    phase();
  } catch (const AgreedError&) {
    throw;  // already agreed inside a nested phase
  } catch (const Error& e) {
    code = static_cast<int>(e.code());
    what = e.what();
    hint = e.hint();
  } catch (const c10::OutOfMemoryError& e) {  // loading or placing a model that does not fit (train/out_of_memory.h
                                              // reports a step that does not)
    code = static_cast<int>(ExitCode::out_of_memory);
    what = "out of device memory: " + leading_sentences(e.what_without_backtrace(), 2);
    hint =
        "`ranktune plan` with the same options shows what the run needs; a 4-bit base (--model.quantize=nf4) or "
        "--parallel.mode=balanced over more GPUs hold a larger model";
  } catch (const std::exception& e) {
    code = static_cast<int>(ExitCode::internal);
    what = e.what();
  }
  // Not host::worst: the agreed error is the first failing rank's, whatever its code (agree.h).
  const int first = static_cast<int>(host::min(env, code ? env.rank() : env.size()));
  if (first == env.size()) return;
  std::int64_t agreed_code = code;
  host::broadcast(env, agreed_code, first);
  host::broadcast(env, what, first);
  host::broadcast(env, hint, first);
  if (env.size() > 1 && first != 0) what = "rank " + std::to_string(first) + ": " + what;
  throw AgreedError(static_cast<ExitCode>(agreed_code), what, hint, first);
}

void agree_config_hash(const MpiEnv& env, std::uint64_t hash) {
  const std::vector<std::uint64_t> all = host::all_gather(env, hash);
  std::string differ;
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (differ.empty()) return;
  throw AgreedError(ExitCode::usage,
                    "ranks disagree on the effective config: rank(s) " + differ + " differ from rank 0",
                    "every rank must read the same config file (on a shared filesystem) with the same command line", 0);
}

}  // namespace ranktune
