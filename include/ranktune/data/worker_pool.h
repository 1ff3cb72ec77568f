// defines: WorkerPool, a fixed set of threads that runs one function over the indices of a batch. `prepare` parses and
// tokenizes a batch of records on it while its own thread reads the next batch and a SerialStage packs the previous
// one in input order, so the rows are byte for byte those of one thread (tokenizers are const; BpeModel caches words
// per thread).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ranktune {

class WorkerPool {
 public:
  // threads <= 1 starts no thread: the batch then runs in the caller, in index order, inside wait().
  explicit WorkerPool(int threads);
  // Abandons what is left of a batch (one that failed in the caller, say), lets the calls in progress return, joins.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }  // the caller works too, in wait()

  // Starts calling fn(i) once for every i in [0, n), spread over the threads in no particular order, and returns at
  // once; the previous batch must have been waited for. What fn touches must outlive the batch.
  void start(std::size_t n, std::function<void(std::size_t)> fn);
  // Works on the batch too, and returns when every call has returned. An exception thrown by fn is rethrown here
  // (the first one), after the calls in progress have returned; the rest of that batch is not started.
  void wait();
  void run(std::size_t n, std::function<void(std::size_t)> fn) {
    start(n, std::move(fn));
    wait();
  }

 private:
  void work();  // takes indices of the current batch until none is left
  void worker_main();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  std::function<void(std::size_t)> fn_;
  std::size_t n_ = 0, next_ = 0;  // the batch and its next index, under mu_
  std::size_t generation_ = 0;    // incremented per batch: wakes the workers
  int busy_ = 0;                  // workers still in the current batch
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace ranktune
