// Applies cpu_threads_decide to this process: its affinity mask from sched_getaffinity, compared with the other ranks
// of its node through one all-gather of a hash of the mask.
#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "ranktune/core/hash.h"
#include "ranktune/distributed/cpu_threads.h"
#include "ranktune/distributed/host_collectives.h"

namespace ranktune {

CpuThreads cpu_threads_apply(const MpiEnv& env) {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = 1;
  Fnv1a mask;  // over the set CPUs' indices
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    cpus = CPU_COUNT(&set);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) mask.update_word(static_cast<std::uint64_t>(c));
  }  // else (not seen on Linux): one CPU, its own mask; the decision then says "1 CPU(s)"
  const std::uint64_t mask_hash = mask.value();
  const std::vector<std::uint64_t> hashes = host::all_gather(env, mask_hash, host::Scope::node);
  const int sharing = static_cast<int>(std::count(hashes.begin(), hashes.end(), mask_hash));
  std::optional<std::string> omp;
  if (const char* v = std::getenv("OMP_NUM_THREADS")) omp = v;
  const CpuThreads t = cpu_threads_decide(cpus, sharing, omp);
  at::set_num_threads(t.threads);
  return t;
}

}  // namespace ranktune
