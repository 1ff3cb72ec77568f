// defines: topology_detect, which reads this rank's GPUs (CUDA runtime + NVML for free memory) and all-gathers
// every rank's facts over MPI, so every rank holds the same ClusterFacts.
#pragma once

#include "ranktune/distributed/topology.h"

namespace ranktune {

class MpiEnv;

// This rank's facts (may throw on a CUDA failure: run it inside agree_run).
RankFacts topology_local_facts(const MpiEnv& env, const LaunchEnv& launch_env);
// Every rank's facts on every rank (collective).
ClusterFacts topology_gather(const MpiEnv& env, const RankFacts& mine);
// Both, with the local probe's failure agreed across ranks first.
ClusterFacts topology_detect(const MpiEnv& env, const LaunchEnv& launch_env);

}  // namespace ranktune
