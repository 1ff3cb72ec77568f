// Sampler: determinism from the seed, world-size independence (1, 2 and 4 ranks read the same rows per step),
// epochs without repeats, and resume from a cursor equal to an uninterrupted run.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "ranktune/data/data_error.h"
#include "ranktune/data/sampler.h"

namespace ranktune {
namespace {

// All ranks' rows of the next step, concatenated in rank order (what the world trains on at that step).
std::vector<std::int64_t> world_step(std::vector<Sampler>& ranks) {
  std::vector<std::int64_t> all;
  for (Sampler& s : ranks) {
    for (const auto& mb : s.next_step()) all.insert(all.end(), mb.begin(), mb.end());
  }
  return all;
}

std::vector<Sampler> world(std::int64_t rows, std::int64_t micro, std::int64_t accum, int world_size,
                           std::uint64_t seed = 7) {
  std::vector<Sampler> out;
  for (int r = 0; r < world_size; ++r) out.emplace_back(SamplerOptions{rows, micro, accum, seed, true}, r, world_size);
  return out;
}

TEST(Sampler, SameRowsPerStepAtOneTwoAndFourRanks) {
  auto w1 = world(100, 4, 4, 1), w2 = world(100, 4, 2, 2), w4 = world(100, 2, 2, 4);
  ASSERT_EQ(w1[0].global_batch(), 16);
  ASSERT_EQ(w4[0].global_batch(), 16);
  for (int step = 0; step < 20; ++step) {  // 6 steps per epoch: crosses three epoch boundaries
    const auto a = world_step(w1), b = world_step(w2), c = world_step(w4);
    EXPECT_EQ(a.size(), 16u);
    EXPECT_EQ(a, b) << "step " << step;
    EXPECT_EQ(a, c) << "step " << step;
  }
}

TEST(Sampler, RanksGetDisjointSlicesOfMicroBatchSize) {
  auto w = world(64, 2, 3, 4);
  std::set<std::int64_t> seen;
  for (Sampler& s : w) {
    const auto micro = s.next_step();
    ASSERT_EQ(micro.size(), 3u);
    for (const auto& mb : micro) {
      ASSERT_EQ(mb.size(), 2u);
      for (auto row : mb) EXPECT_TRUE(seen.insert(row).second) << row;
    }
  }
  EXPECT_EQ(seen.size(), 24u);
}

TEST(Sampler, DeterministicFromTheSeedAndNoRepeatsWithinAnEpoch) {
  auto a = world(50, 5, 1, 1, 42), b = world(50, 5, 1, 1, 42), c = world(50, 5, 1, 1, 43);
  std::set<std::int64_t> epoch0;
  bool differs = false;
  for (int step = 0; step < 10; ++step) {
    const auto x = world_step(a), y = world_step(b), z = world_step(c);
    EXPECT_EQ(x, y);
    differs = differs || x != z;
    for (auto r : x) EXPECT_TRUE(epoch0.insert(r).second);
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(epoch0.size(), 50u);
  EXPECT_EQ(a[0].cursor(), (SamplerCursor{0, 50}));
  world_step(a);
  EXPECT_EQ(a[0].cursor(), (SamplerCursor{1, 5}));
}

TEST(Sampler, EpochOrderIsAPermutationThatChangesPerEpoch) {
  const auto e0 = Sampler::epoch_order(1000, 3, 0, true), e1 = Sampler::epoch_order(1000, 3, 1, true);
  auto sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(Sampler::epoch_order(5, 3, 0, false), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  // Pinned values: the order must not change across compilers or library versions (resume depends on it).
  EXPECT_EQ(Sampler::epoch_order(8, 1234, 0, true), (std::vector<std::int64_t>{4, 0, 1, 6, 2, 7, 5, 3}));
}

TEST(Sampler, ResumeFromACursorEqualsAnUninterruptedRun) {
  auto straight = world(90, 3, 2, 2);
  std::vector<std::vector<std::int64_t>> expect;
  for (int step = 0; step < 25; ++step) expect.push_back(world_step(straight));

  auto first = world(90, 3, 2, 2);
  for (int step = 0; step < 11; ++step) EXPECT_EQ(world_step(first), expect[step]);
  const auto saved = first[0].cursor().to_ints();
  EXPECT_EQ(first[1].cursor().to_ints(), saved);  // every rank holds the same global cursor

  // Resumed at another world size with the same global batch: 1 rank x 3 x 4 = 2 ranks x 3 x 2.
  for (int ws : {2, 1}) {
    auto resumed = ws == 2 ? world(90, 3, 2, 2) : world(90, 3, 4, 1);
    for (Sampler& s : resumed) s.seek(SamplerCursor::from_ints(saved));
    for (int step = 11; step < 25; ++step) EXPECT_EQ(world_step(resumed), expect[step]) << "world " << ws;
  }
}

TEST(Sampler, RefusesImpossibleSetups) {
  try {
    Sampler(SamplerOptions{10, 4, 2, 0, true}, 0, 2);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one global batch of 16 = micro_batch 4 x grad_accum 2 x world "
                                         "size 2"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Sampler(SamplerOptions{10, 1, 1, 0, true}, 2, 2), ConfigError);
  EXPECT_THROW(Sampler(SamplerOptions{10, 0, 1, 0, true}, 0, 1), ConfigError);
  Sampler s(SamplerOptions{10, 1, 1, 0, true}, 0, 1);
  EXPECT_THROW(s.seek({0, 11}), CheckpointError);
  EXPECT_THROW(s.seek({-1, 0}), CheckpointError);
}

}  // namespace
}  // namespace ranktune
