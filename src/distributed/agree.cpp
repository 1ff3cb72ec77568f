// Outcome agreement over MPI: one MIN-reduction of the failing rank (or size if none), then that rank broadcasts
// its message, code and hint.
#include "ranktune/distributed/agree.h"

#include <vector>

#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {
namespace {

void bcast_string(std::string& s, int root, MPI_Comm comm) {
  unsigned long long n = s.size();
  RANKTUNE_MPI_CHECK(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm));
  s.resize(n);
  if (n) RANKTUNE_MPI_CHECK(MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, root, comm));
}

}  // namespace

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
  } catch (const std::exception& e) {
    code = static_cast<int>(ExitCode::internal);
    what = e.what();
  }
  int mine = code ? env.rank() : env.size();
  int first = env.size();
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, env.world()));
  if (first == env.size()) return;
  RANKTUNE_MPI_CHECK(MPI_Bcast(&code, 1, MPI_INT, first, env.world()));
  bcast_string(what, first, env.world());
  bcast_string(hint, first, env.world());
  if (env.size() > 1 && first != 0) what = "rank " + std::to_string(first) + ": " + what;
  throw AgreedError(static_cast<ExitCode>(code), what, hint, first);
}

void agree_config_hash(const MpiEnv& env, std::uint64_t hash) {
  std::vector<unsigned long long> all(static_cast<std::size_t>(env.size()));
  unsigned long long mine = hash;
  RANKTUNE_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, env.world()));
  std::string differ;
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (differ.empty()) return;
  throw AgreedError(ExitCode::usage,
                    "ranks disagree on the effective config: rank(s) " + differ + " differ from rank 0",
                    "every rank must read the same config file (on a shared filesystem) with the same command line",
                    0);
}

}  // namespace ranktune
