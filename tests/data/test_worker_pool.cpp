// WorkerPool: every index runs exactly once per batch at any thread count, batches run back to back on the same
// threads, an exception comes back to the caller after the batch and leaves the pool usable, one thread runs inline.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ranktune/data/worker_pool.h"

namespace ranktune {
namespace {

TEST(WorkerPool, EveryIndexOnceInEveryBatch) {
  for (int threads : {1, 2, 3, 8}) {
    WorkerPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (std::size_t n : {0u, 1u, 5u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.run(n, [&](std::size_t i) { hits[i]++; });
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i << " of " << n << ", " << threads;
    }
  }
}

TEST(WorkerPool, SeveralThreadsReallyWork) {
  WorkerPool pool(4);
  std::vector<std::thread::id> who(64);
  pool.run(who.size(), [&](std::size_t i) {
    who[i] = std::this_thread::get_id();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  std::sort(who.begin(), who.end());
  EXPECT_GT(std::unique(who.begin(), who.end()) - who.begin(), 1);
}

TEST(WorkerPool, OneThreadRunsInTheCallerInOrder) {
  WorkerPool pool(1);
  std::vector<std::size_t> order;
  const std::thread::id caller = std::this_thread::get_id();
  pool.run(5, [&](std::size_t i) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(i);
  });
  EXPECT_EQ(order, (std::vector<std::size_t>{0, 1, 2, 3, 4}));
}

TEST(WorkerPool, AnExceptionReachesTheCallerAndThePoolGoesOn) {
  WorkerPool pool(3);
  EXPECT_THROW(pool.run(100,
                        [](std::size_t i) {
                          if (i == 37) throw std::runtime_error("record 37");
                        }),
               std::runtime_error);
  std::atomic<int> sum{0};
  pool.run(10, [&](std::size_t i) { sum += static_cast<int>(i); });
  EXPECT_EQ(sum.load(), 45);
}

}  // namespace
}  // namespace ranktune
