// MpiEnv, outcome agreement and config-hash agreement at 1, 2 and 4 ranks.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "ranktune/core/config.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/topology_detect.h"

namespace ranktune {
namespace {

TEST(MpiEnv, LocalRankComesFromTheSharedMemorySplit) {
  MpiEnv env(nullptr, nullptr);
  // All ranks of a CTest run share this host: the split communicator is the world.
  EXPECT_EQ(env.local_size(), env.size());
  EXPECT_EQ(env.local_rank(), env.rank());
  EXPECT_FALSE(env.host().empty());
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  EXPECT_EQ(env.size(), world);
}

TEST(MpiEnv, LocalRankIgnoresLauncherVariables) {
  // A stale launcher variable must not change what MPI says.
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "7", 1);
  MpiEnv env(nullptr, nullptr);
  EXPECT_EQ(env.local_rank(), env.rank());
}

TEST(Agree, SuccessOnEveryRankReturnsNormally) {
  MpiEnv env(nullptr, nullptr);
  EXPECT_NO_THROW(agree_run(env, [] {}));
}

TEST(Agree, OneFailingRankFailsEveryRankWithItsCodeAndMessage) {
  MpiEnv env(nullptr, nullptr);
  const int culprit = env.size() - 1;
  try {
    agree_run(env, [&] {
      if (env.rank() == culprit) throw NoGpuError("no GPU here", "use --device=cpu");
    });
    ADD_FAILURE() << "agree_run returned on rank " << env.rank();
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::no_gpu);
    EXPECT_EQ(e.failing_rank(), culprit);
    EXPECT_NE(std::string(e.what()).find("no GPU here"), std::string::npos);
    EXPECT_EQ(e.hint(), "use --device=cpu");
  }
}

// LibTorch's allocator running out while a model is built or placed: exit 7 with its first sentences, on every rank.
TEST(Agree, AllocatorOutOfMemoryIsExitSeven) {
  MpiEnv env(nullptr, nullptr);
  try {
    agree_run(env, [&] {
      if (env.rank() == 0)
        C10_THROW_ERROR(OutOfMemoryError, "CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has 1 GiB free.");
    });
    ADD_FAILURE() << "agree_run returned on rank " << env.rank();
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::out_of_memory);
    EXPECT_EQ(std::string(e.what()), "out of device memory: CUDA out of memory. Tried to allocate 8.00 GiB.");
    EXPECT_NE(e.hint().find("ranktune plan"), std::string::npos) << e.hint();
  }
}

TEST(Agree, LowestFailingRankWins) {
  MpiEnv env(nullptr, nullptr);
  try {
    agree_run(env, [&] { throw ConfigError("bad on rank " + std::to_string(env.rank())); });
    ADD_FAILURE() << "agree_run returned";
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.failing_rank(), 0);
    EXPECT_EQ(std::string(e.what()), "bad on rank 0");
  }
}

TEST(Agree, ConfigHashAgreement) {
  MpiEnv env(nullptr, nullptr);
  Config cfg;
  EXPECT_NO_THROW(agree_config_hash(env, config_hash(cfg)));
  if (env.rank() == env.size() - 1 && env.size() > 1) cfg.train.lr *= 2;
  if (env.size() > 1) {
    try {
      agree_config_hash(env, config_hash(cfg));
      ADD_FAILURE() << "differing configs accepted";
    } catch (const AgreedError& e) {
      EXPECT_EQ(e.code(), ExitCode::usage);
      EXPECT_NE(std::string(e.what()).find("rank(s) " + std::to_string(env.size() - 1)), std::string::npos);
    }
  }
}

TEST(Topology, EveryRankHoldsEveryRanksFacts) {
  MpiEnv env(nullptr, nullptr);
  const ClusterFacts facts = topology_detect(env, {{"CUDA_VISIBLE_DEVICES", "rank" + std::to_string(env.rank())}});
  ASSERT_EQ(facts.world_size, env.size());
  ASSERT_EQ(static_cast<int>(facts.ranks.size()), env.size());
  for (int r = 0; r < env.size(); ++r) {
    EXPECT_EQ(facts.ranks[r].world_rank, r);
    EXPECT_EQ(facts.ranks[r].local_rank, r);
    EXPECT_EQ(facts.ranks[r].local_size, env.size());
    EXPECT_EQ(facts.ranks[r].env.at("CUDA_VISIBLE_DEVICES"), "rank" + std::to_string(r));
  }
}

}  // namespace
}  // namespace ranktune
