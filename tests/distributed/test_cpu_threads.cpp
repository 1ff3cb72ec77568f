// cpu_threads_decide: how many intra-op threads a rank takes, from its affinity mask, the ranks of its node on the
// same mask and OMP_NUM_THREADS.
#include <gtest/gtest.h>

#include "ranktune/distributed/cpu_threads.h"

namespace ranktune {
namespace {

TEST(CpuThreads, OneRankTakesEveryCpuItMayRunOn) {
  const CpuThreads t = cpu_threads_decide(16, 1, std::nullopt);
  EXPECT_EQ(t.threads, 16);
  EXPECT_EQ(t.reason,
            "16 CPU(s) in this rank's affinity mask, shared by 1 rank(s) on this node "
            "(set OMP_NUM_THREADS to choose)");
}

TEST(CpuThreads, RanksOnOneMaskShareIt) {
  EXPECT_EQ(cpu_threads_decide(16, 4, std::nullopt).threads, 4);
  EXPECT_EQ(cpu_threads_decide(16, 3, std::nullopt).threads, 5);  // rounded down: never more threads than CPUs
  const CpuThreads t = cpu_threads_decide(2, 2, std::nullopt);
  EXPECT_EQ(t.threads, 1);
  EXPECT_EQ(t.reason,
            "2 CPU(s) in this rank's affinity mask, shared by 2 rank(s) on this node "
            "(set OMP_NUM_THREADS to choose)");
}

TEST(CpuThreads, MoreRanksThanCpusStillGetOneThreadEach) {
  EXPECT_EQ(cpu_threads_decide(2, 4, std::nullopt).threads, 1);
  EXPECT_EQ(cpu_threads_decide(1, 8, std::nullopt).threads, 1);
}

TEST(CpuThreads, OmpNumThreadsWins) {
  const CpuThreads t = cpu_threads_decide(16, 4, std::string("6"));
  EXPECT_EQ(t.threads, 6);
  EXPECT_EQ(t.reason, "OMP_NUM_THREADS=6");
}

TEST(CpuThreads, AMalformedOmpNumThreadsIsIgnoredAndSaid) {
  for (const char* bad : {"", "0", "-2", "four", "4,2", "99999999"}) {
    const CpuThreads t = cpu_threads_decide(8, 2, std::string(bad));
    EXPECT_EQ(t.threads, 4) << bad;
    EXPECT_NE(t.reason.find(std::string("OMP_NUM_THREADS='") + bad + "' is not a positive integer, ignored"),
              std::string::npos)
        << t.reason;
  }
}

TEST(CpuThreads, AHugeOmpNumThreadsIsCappedAtFourPerCpuAndSaid) {
  const CpuThreads t = cpu_threads_decide(2, 1, std::string("100000"));
  EXPECT_EQ(t.threads, 8);
  EXPECT_EQ(t.reason, "OMP_NUM_THREADS=100000 capped at 8 (4x the 2 CPU(s) in this rank's affinity mask)");
  EXPECT_EQ(cpu_threads_decide(2, 1, std::string("8")).threads, 8);  // at the cap: taken as given
  EXPECT_EQ(cpu_threads_decide(2, 1, std::string("8")).reason, "OMP_NUM_THREADS=8");
}

TEST(CpuThreads, NonsenseCountsFallBackToOneThread) {
  EXPECT_EQ(cpu_threads_decide(0, 0, std::nullopt).threads, 1);
  EXPECT_EQ(cpu_threads_decide(-3, 2, std::nullopt).threads, 1);
}

}  // namespace
}  // namespace ranktune
