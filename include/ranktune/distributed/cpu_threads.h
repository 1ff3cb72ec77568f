// defines: CpuThreads and cpu_threads_decide, how many intra-op CPU threads one rank uses. Several ranks on one node
// that each start a thread per CPU fight over the CPUs (a thread spinning at a barrier while its partner waits for a
// CPU): torchrun sets OMP_NUM_THREADS=1 for this reason. Pure, unit-tested in tests/distributed/test_cpu_threads.cpp.
#pragma once

#include <optional>
#include <string>

namespace ranktune {

class MpiEnv;

struct CpuThreads {
  int threads = 1;
  std::string reason;            // "2 CPU(s) in this rank's affinity mask, shared by 2 rank(s) on this node (set ...)"
  std::string describe() const;  // "1 intra-op thread(s) per rank: <reason>", the `cpu:` line of topology and train
};

// affinity_cpus: the CPUs this process may run on; sharing_ranks: the ranks on this node with the same CPU set (a
// launcher that binds each rank to its own CPUs makes it 1); omp_num_threads: the variable's value when set. A
// positive OMP_NUM_THREADS wins; otherwise the CPUs are shared out, at least one thread each.
CpuThreads cpu_threads_decide(int affinity_cpus, int sharing_ranks, const std::optional<std::string>& omp_num_threads);

// Reads this process's affinity mask and OMP_NUM_THREADS, counts the node's ranks with the same mask (collective over
// the node-local communicator), decides, and sets LibTorch's intra-op threads (src/dist/cpu_threads_apply.cpp).
CpuThreads cpu_threads_apply(const MpiEnv& env);

}  // namespace ranktune
