// Indices are handed out one at a time under the mutex: an item is a whole record (tens of microseconds at least), so
// the lock is never the bottleneck, and an uneven batch (one long document) balances itself.
#include "ranktune/data/worker_pool.h"

#include <utility>

namespace ranktune {

WorkerPool::WorkerPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_main(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    next_ = n_;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void WorkerPool::work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (next_ < n_) {
    const std::size_t i = next_++;
    lock.unlock();
    try {
      fn_(i);
    } catch (...) {
      lock.lock();
      if (!error_) error_ = std::current_exception();
      next_ = n_;  // the batch has failed: start nothing more of it
      continue;
    }
    lock.lock();
  }
}

void WorkerPool::worker_main() {
  std::size_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    work();
    std::lock_guard<std::mutex> lock(mu_);
    if (--busy_ == 0) done_cv_.notify_all();
  }
}

void WorkerPool::start(std::size_t n, std::function<void(std::size_t)> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = std::move(fn);
    n_ = n;
    next_ = 0;
    error_ = nullptr;
    busy_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
}

void WorkerPool::wait() {
  work();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return busy_ == 0; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace ranktune
