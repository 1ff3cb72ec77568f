// Gathers every rank's facts to every rank (an all-gather of the text encoding).
#include "ranktune/distributed/topology_detect.h"

#include <vector>

#include "gpu_probe.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/host_collectives.h"
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
  ClusterFacts facts;
  facts.world_size = env.size();
  for (const std::string& record : host::all_gather(env, rank_facts_encode(local)))
    facts.ranks.push_back(rank_facts_decode(record));
  return facts;
}

}  // namespace ranktune
