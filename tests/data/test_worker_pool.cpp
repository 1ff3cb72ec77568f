// WorkerPool: every index runs exactly once per batch at any thread count, batches run back to back on the same
// threads, an exception comes back to the caller after the batch and leaves the pool usable, one thread runs inline.
// SerialStage: jobs run in submission order on one other thread, submit waits while max_unfinished jobs are pending,
// a job's exception reaches the caller once and drops the jobs queued after it, destruction abandons queued jobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ranktune/data/serial_stage.h"
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

TEST(SerialStage, RunsJobsInOrderOnAnotherThread) {
  SerialStage stage(2);
  std::vector<int> order;  // touched by the stage's thread only until drain returns
  std::thread::id ran_on;
  for (int i = 0; i < 50; ++i) {
    stage.submit([&, i] {
      ran_on = std::this_thread::get_id();
      order.push_back(i);
    });
  }
  stage.drain();
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(SerialStage, SubmitWaitsForTheUnfinishedJob) {
  // max_unfinished 1: the second submit returns only once the first job has finished, which is what lets prepare
  // reuse a batch two turns after handing it over.
  SerialStage stage(1);
  std::atomic<bool> first_done{false};
  stage.submit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    first_done = true;
  });
  stage.submit([] {});
  EXPECT_TRUE(first_done.load());
  stage.drain();
}

TEST(SerialStage, AnExceptionReachesTheCallerOnceAndDropsWhatWasQueued) {
  SerialStage stage(3);
  std::atomic<int> ran{0};
  std::atomic<bool> release{false};
  stage.submit([&] {
    while (!release) std::this_thread::yield();
    throw std::runtime_error("row 7");
  });
  stage.submit([&] { ++ran; });  // queued behind the failing job: dropped
  release = true;
  EXPECT_THROW(stage.drain(), std::runtime_error);
  EXPECT_EQ(ran.load(), 0);
  stage.drain();  // told once; the stage runs new jobs again
  stage.submit([&] { ++ran; });
  stage.drain();
  EXPECT_EQ(ran.load(), 1);
}

TEST(SerialStage, TheErrorComesBackThroughSubmit) {
  // max_unfinished 1: the next submit waits for the failing job, then rethrows instead of queueing.
  SerialStage stage(1);
  std::atomic<int> ran{0};
  stage.submit([] { throw std::runtime_error("row 9"); });
  EXPECT_THROW(stage.submit([&] { ++ran; }), std::runtime_error);
  stage.drain();
  EXPECT_EQ(ran.load(), 0);
}

TEST(SerialStage, DestructionLetsTheRunningJobEndAndDropsTheQueued) {
  std::atomic<int> ran{0};
  std::atomic<bool> started{false}, release{false};
  std::thread releaser;
  {
    SerialStage stage(4);
    stage.submit([&] {
      started = true;
      while (!release) std::this_thread::yield();
      ++ran;
    });
    stage.submit([&] { ran += 10; });
    stage.submit([&] { ran += 100; });
    while (!started) std::this_thread::yield();
    releaser = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      release = true;
    });
  }  // the destructor drops the two queued jobs and waits for the running one
  releaser.join();
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace ranktune
