// The intra-op thread count of one rank (see the header for the rules).
#include "ranktune/distributed/cpu_threads.h"

#include <algorithm>
#include <cstdlib>

namespace ranktune {

namespace {

constexpr int kMaxThreadsPerCpu = 4;

std::optional<int> positive_int(const std::string& s) {
  if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  const int v = std::atoi(s.c_str());
  return v > 0 ? std::optional<int>(v) : std::nullopt;
}

}  // namespace

std::string CpuThreads::describe() const { return std::to_string(threads) + " intra-op thread(s) per rank: " + reason; }

CpuThreads cpu_threads_decide(int affinity_cpus, int sharing_ranks, const std::optional<std::string>& omp_num_threads) {
  affinity_cpus = std::max(1, affinity_cpus);
  sharing_ranks = std::max(1, sharing_ranks);
  std::string ignored;
  if (omp_num_threads) {
    if (const auto v = positive_int(*omp_num_threads)) {
      // A typo such as 100000 would start that many threads and stall start-up; a few per CPU is the useful maximum.
      const int cap = kMaxThreadsPerCpu * affinity_cpus;
      if (*v > cap)
        return {cap, "OMP_NUM_THREADS=" + *omp_num_threads + " capped at " + std::to_string(cap) + " (" +
                         std::to_string(kMaxThreadsPerCpu) + "x the " + std::to_string(affinity_cpus) +
                         " CPU(s) in this rank's affinity mask)"};
      return {*v, "OMP_NUM_THREADS=" + *omp_num_threads};
    }
    ignored = "; OMP_NUM_THREADS='" + *omp_num_threads + "' is not a positive integer, ignored";
  }
  return {std::max(1, affinity_cpus / sharing_ranks),
          std::to_string(affinity_cpus) + " CPU(s) in this rank's affinity mask, shared by " +
              std::to_string(sharing_ranks) + " rank(s) on this node" + ignored + " (set OMP_NUM_THREADS to choose)"};
}

}  // namespace ranktune
