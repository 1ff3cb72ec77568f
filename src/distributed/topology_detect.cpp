// Gathers every rank's facts to every rank (MPI_Allgatherv of the text encoding).
#include "ranktune/distributed/topology_detect.h"

#include <vector>

#include "gpu_probe.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {

RankFacts topology_local_facts(const MpiEnv& env, const LaunchEnv& launch_env) {
  RankFacts f;
  f.world_rank = env.rank();
  f.local_rank = env.local_rank();
  f.local_size = env.local_size();
  f.host = env.host();
  f.env = launch_env;
  gpu_probe(f);
  return f;
}

ClusterFacts topology_detect(const MpiEnv& env, const LaunchEnv& launch_env) {
  RankFacts mine;
  agree_run(env, [&] { mine = topology_local_facts(env, launch_env); });
  return topology_gather(env, mine);
}

ClusterFacts topology_gather(const MpiEnv& env, const RankFacts& local) {
  const std::string mine = rank_facts_encode(local);
  const int n = env.size();
  std::vector<int> sizes(n), offsets(n);
  int len = static_cast<int>(mine.size());
  RANKTUNE_MPI_CHECK(MPI_Allgather(&len, 1, MPI_INT, sizes.data(), 1, MPI_INT, env.world()));
  int total = 0;
  for (int r = 0; r < n; ++r) offsets[r] = total, total += sizes[r];
  std::string all(static_cast<std::size_t>(total), '\0');
  RANKTUNE_MPI_CHECK(MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR,
                                    env.world()));
  ClusterFacts facts;
  facts.world_size = n;
  for (int r = 0; r < n; ++r) facts.ranks.push_back(rank_facts_decode(all.substr(offsets[r], sizes[r])));
  return facts;
}

}  // namespace ranktune
