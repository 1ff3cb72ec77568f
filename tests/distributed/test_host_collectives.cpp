// Host collectives at 1, 2 and 4 ranks: broadcasts resize receivers, reductions, all-gathers and gathers with a
// different count per rank, byte gathers in chunks, worst() ties and the node scope.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {
namespace {

class HostCollectives : public testing::Test {
 protected:
  MpiEnv env{nullptr, nullptr};
  int rank() const { return env.rank(); }
  int size() const { return env.size(); }
  int last() const { return env.size() - 1; }
};

// Rank r's values: r * 100, r * 100 + 1, ... (`count` of them).
std::vector<std::uint64_t> values_of(int r, int count) {
  std::vector<std::uint64_t> v;
  for (int i = 0; i < count; ++i) v.push_back(static_cast<std::uint64_t>(r) * 100 + static_cast<std::uint64_t>(i));
  return v;
}

TEST_F(HostCollectives, BroadcastStringFromRootZeroResizesReceivers) {
  std::string s = rank() == 0 ? "from rank 0" : "a longer string that receivers must drop";
  host::broadcast(env, s);
  EXPECT_EQ(s, "from rank 0");
}

TEST_F(HostCollectives, BroadcastStringFromLastRankKeepsEmbeddedNul) {
  const std::string sent = "last rank " + std::to_string(last()) + std::string("\0tail", 5);
  std::string s = rank() == last() ? sent : "x";
  host::broadcast(env, s, last());
  EXPECT_EQ(s, sent);
}

TEST_F(HostCollectives, BroadcastEmptyString) {
  std::string s = rank() == last() ? "" : "not empty";
  host::broadcast(env, s, last());
  EXPECT_EQ(s, "");
}

TEST_F(HostCollectives, BroadcastInt64) {
  const std::int64_t big = -(std::int64_t{1} << 40);
  std::int64_t v = rank() == 0 ? big : rank();
  host::broadcast(env, v);
  EXPECT_EQ(v, big);
  std::int64_t w = rank() == last() ? big - last() : -1;
  host::broadcast(env, w, last());
  EXPECT_EQ(w, big - last());
}

TEST_F(HostCollectives, BroadcastInt64Vector) {
  const std::vector<std::int64_t> sent{1, -2, std::numeric_limits<std::int64_t>::max(),
                                       std::numeric_limits<std::int64_t>::min()};
  std::vector<std::int64_t> v = rank() == 0 ? sent : std::vector<std::int64_t>(static_cast<std::size_t>(rank()), 9);
  host::broadcast(env, v);
  EXPECT_EQ(v, sent);

  const std::vector<std::int64_t> from_last{7, 8, last()};
  std::vector<std::int64_t> w = rank() == last() ? from_last : std::vector<std::int64_t>{};
  host::broadcast(env, w, last());
  EXPECT_EQ(w, from_last);
}

TEST_F(HostCollectives, BroadcastEmptyVector) {
  std::vector<std::int64_t> v = rank() == last() ? std::vector<std::int64_t>{} : std::vector<std::int64_t>{1, 2, 3};
  host::broadcast(env, v, last());
  EXPECT_TRUE(v.empty());
}

TEST_F(HostCollectives, SumMaxMinOfInt64) {
  const std::int64_t n = size();
  EXPECT_EQ(host::sum(env, std::int64_t{rank() + 1}), n * (n + 1) / 2);
  // Values past 32 bits: the reduction is on 64-bit integers.
  const std::int64_t big = std::int64_t{1} << 40;
  EXPECT_EQ(host::sum(env, big), n * big);
  EXPECT_EQ(host::max(env, big + rank() * 10 - 5), big + (n - 1) * 10 - 5);
  EXPECT_EQ(host::min(env, -big - rank()), -big - (n - 1));
  EXPECT_EQ(host::min(env, std::int64_t{rank()}), 0);
  EXPECT_EQ(host::max(env, std::int64_t{-rank()}), 0);
}

TEST_F(HostCollectives, SumOfDouble) {
  const double n = size();
  EXPECT_DOUBLE_EQ(host::sum(env, 0.5 * (rank() + 1)), 0.25 * n * (n + 1));
}

TEST_F(HostCollectives, ElementWiseVectorSum) {
  const double n = size();
  std::vector<double> v{static_cast<double>(rank()), 1.0, -0.5 * rank()};
  host::sum(env, v);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_DOUBLE_EQ(v[0], n * (n - 1) / 2);
  EXPECT_DOUBLE_EQ(v[1], n);
  EXPECT_DOUBLE_EQ(v[2], -n * (n - 1) / 4);

  std::vector<double> empty;
  host::sum(env, empty);
  EXPECT_TRUE(empty.empty());
}

TEST_F(HostCollectives, AnyIsLogicalOr) {
  EXPECT_FALSE(host::any(env, false));
  EXPECT_TRUE(host::any(env, true));
  EXPECT_TRUE(host::any(env, rank() == last()));
  EXPECT_TRUE(host::any(env, rank() == 0));
}

TEST_F(HostCollectives, AllGatherOfUint64InRankOrder) {
  const std::uint64_t top = std::uint64_t{1} << 63;  // beyond int64: the values travel as unsigned
  const std::vector<std::uint64_t> all = host::all_gather(env, top + static_cast<std::uint64_t>(rank()));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(size()));
  for (int r = 0; r < size(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], top + static_cast<std::uint64_t>(r));
}

TEST_F(HostCollectives, AllGatherOfVectorsWithACountPerRank) {
  // Rank r sends r + 1 values.
  const auto all = host::all_gather(env, values_of(rank(), rank() + 1));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(size()));
  for (int r = 0; r < size(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], values_of(r, r + 1)) << "rank " << r;
}

TEST_F(HostCollectives, AllGatherOfVectorsWhereRankZeroSendsNone) {
  // Rank r sends r values: rank 0 none (and at one rank, nobody sends anything).
  const auto all = host::all_gather(env, values_of(rank(), rank()));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(size()));
  EXPECT_TRUE(all[0].empty());
  for (int r = 0; r < size(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], values_of(r, r)) << "rank " << r;
}

TEST_F(HostCollectives, AllGatherOfStringsOfDifferentLengths) {
  // Rank 0's string is empty; rank r's is r copies of "r<r>;" and, from rank 1, a NUL in the middle.
  auto string_of = [](int r) {
    std::string s;
    for (int i = 0; i < r; ++i) s += "r" + std::to_string(r) + ";";
    if (r > 0) s += std::string("\0end", 4);
    return s;
  };
  const std::vector<std::string> all = host::all_gather(env, string_of(rank()));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(size()));
  EXPECT_EQ(all[0], "");
  for (int r = 0; r < size(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], string_of(r)) << "rank " << r;
}

TEST_F(HostCollectives, GatherWithACountPerRankReachesOnlyTheRoot) {
  for (const int root : {0, last()}) {
    // Rank r sends r values to root 0 and r + 2 values to the last rank.
    const int extra = root == 0 ? 0 : 2;
    const auto got = host::gather(env, values_of(rank(), rank() + extra), root);
    if (rank() != root) {
      EXPECT_TRUE(got.empty()) << "root " << root;
      continue;
    }
    ASSERT_EQ(got.size(), static_cast<std::size_t>(size()));
    for (int r = 0; r < size(); ++r)
      EXPECT_EQ(got[static_cast<std::size_t>(r)], values_of(r, r + extra)) << "root " << root << ", rank " << r;
  }
}

// Rank r sends r * 7 + 3 bytes (rank 1 none), each byte naming its rank and position; a chunk of 4 bytes makes
// several rounds in which the ranks run out at different times.
std::string bytes_of(int r) {
  if (r == 1) return {};
  std::string s;
  for (int i = 0; i < r * 7 + 3; ++i) s.push_back(static_cast<char>(r * 31 + i));
  return s;
}

TEST_F(HostCollectives, GatherBytesInChunksReachesOnlyTheRootInRankOrder) {
  for (const std::size_t chunk : {std::size_t{0}, std::size_t{4}, std::size_t{1}}) {
    const std::vector<std::string> got = host::gather_bytes(env, bytes_of(rank()), last(), chunk);
    if (rank() != last()) {
      EXPECT_TRUE(got.empty());
      continue;
    }
    ASSERT_EQ(got.size(), static_cast<std::size_t>(size()));
    for (int r = 0; r < size(); ++r) EXPECT_EQ(got[static_cast<std::size_t>(r)], bytes_of(r)) << "chunk " << chunk;
  }
}

TEST_F(HostCollectives, GatherBytesWhenNoRankSendsAny) {
  const std::vector<std::string> got = host::gather_bytes(env, std::string());
  EXPECT_EQ(got.size(), rank() == 0 ? static_cast<std::size_t>(size()) : 0u);
  for (const std::string& s : got) EXPECT_TRUE(s.empty());
}

TEST_F(HostCollectives, WorstWithNoFailure) {
  const host::Outcome o = host::worst(env, 0, "ignored on rank " + std::to_string(rank()));
  EXPECT_EQ(o.code, 0);
  EXPECT_EQ(o.message, "");
  EXPECT_EQ(o.rank, -1);
}

TEST_F(HostCollectives, WorstTakesTheHighestCodeAndItsRanksMessage) {
  // Every rank fails, rank r with code r + 1: the last rank has the highest code, so its message wins.
  const host::Outcome o = host::worst(env, rank() + 1, "failure on rank " + std::to_string(rank()));
  EXPECT_EQ(o.code, size());
  EXPECT_EQ(o.rank, last());
  EXPECT_EQ(o.message, "failure on rank " + std::to_string(last()));
}

TEST_F(HostCollectives, WorstTieGoesToTheLowestRank) {
  // Rank 0 has code 2; ranks 1.. share code 5, so rank 1 wins (rank 0 alone at one rank).
  const host::Outcome o = host::worst(env, rank() == 0 ? 2 : 5, "message of rank " + std::to_string(rank()));
  const int want_rank = size() > 1 ? 1 : 0;
  EXPECT_EQ(o.code, size() > 1 ? 5 : 2);
  EXPECT_EQ(o.rank, want_rank);
  EXPECT_EQ(o.message, "message of rank " + std::to_string(want_rank));

  // Every rank has the same code: rank 0 wins.
  const host::Outcome same = host::worst(env, 3, "same code on rank " + std::to_string(rank()));
  EXPECT_EQ(same.code, 3);
  EXPECT_EQ(same.rank, 0);
  EXPECT_EQ(same.message, "same code on rank 0");
}

TEST_F(HostCollectives, NodeScopeUsesTheNodeLocalCommunicator) {
  EXPECT_EQ(host::sum(env, std::int64_t{1}, host::Scope::node), env.local_size());
  const std::vector<std::uint64_t> ranks = host::all_gather(env, static_cast<std::uint64_t>(rank()), host::Scope::node);
  ASSERT_EQ(ranks.size(), static_cast<std::size_t>(env.local_size()));
  EXPECT_EQ(ranks[static_cast<std::size_t>(env.local_rank())], static_cast<std::uint64_t>(rank()));
  EXPECT_EQ(host::sum(env, std::int64_t{1}), size());
}

TEST_F(HostCollectives, Barrier) {
  EXPECT_NO_THROW(host::barrier(env));
  EXPECT_NO_THROW(host::barrier(env, host::Scope::node));
}

}  // namespace
}  // namespace ranktune
