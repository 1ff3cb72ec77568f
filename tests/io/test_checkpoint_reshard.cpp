// Loading the 2-rank fixture at another world size: a replicated checkpoint loads (rank 0's file shared, per-rank
// files where they exist), a per-rank one is refused with both world sizes named.
#include <gtest/gtest.h>

#include "io/fixture_state.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint.h"

using namespace ranktune;

namespace {
const std::filesystem::path kFixture = RANKTUNE_FIXTURE_DIR;
}

TEST(CheckpointReshard, ReplicatedLoadsAtAnotherWorldSize) {
  MpiEnv env(nullptr, nullptr);
  const LoadedCheckpoint lc = checkpoint_load(env, kFixture / "replicated", h5::FileLocking::best_effort);
  EXPECT_EQ(lc.manifest.world_size, 2);
  EXPECT_EQ(lc.resharded, env.size() != 2);
  std::string why;
  EXPECT_TRUE(test::states_equal(lc.shared, test::fixture_state(0, 7), &why)) << why;
  EXPECT_EQ(lc.has_rank_state, env.rank() < 2);
  if (env.rank() < 2) EXPECT_TRUE(test::states_equal(lc.state, test::fixture_state(env.rank(), 7), &why)) << why;
  else EXPECT_TRUE(lc.state.empty());
}

TEST(CheckpointReshard, PerRankStateIsRefusedWithBothNumbers) {
  MpiEnv env(nullptr, nullptr);
  if (env.size() == 2) GTEST_SKIP() << "same world size as the fixture";
  try {
    checkpoint_resume(env, (kFixture / "per_rank").string(), kFixture, h5::FileLocking::best_effort);
    FAIL() << "a per-rank checkpoint of 2 ranks loaded at world size " << env.size();
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::checkpoint);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("saved by 2 rank(s)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("this run has " + std::to_string(env.size())), std::string::npos) << msg;
    EXPECT_FALSE(e.hint().empty());
  }
}
