// defines: SerialStage, one thread that runs the jobs handed to it one after another, in the order given: a pipeline
// stage whose work must see its inputs in order (prepare packs rows and writes them to HDF5 on it) while the caller
// goes on with the next input. At most `max_unfinished` jobs wait or run at once; submit blocks until one finishes.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace ranktune {

class SerialStage {
 public:
  explicit SerialStage(std::size_t max_unfinished = 1);
  // Lets the job in progress return, drops the queued ones, joins: safe while unwinding from the caller's error.
  ~SerialStage();
  SerialStage(const SerialStage&) = delete;
  SerialStage& operator=(const SerialStage&) = delete;

  // Queues fn once fewer than max_unfinished jobs are queued or running. When a job throws, the jobs queued after it
  // are dropped and the next submit or drain rethrows its exception (once) instead of queueing or returning.
  void submit(std::function<void()> fn);
  // Returns once every submitted job has run; rethrows the exception of a job that threw.
  void drain();

 private:
  void run();
  void rethrow_locked();

  const std::size_t max_unfinished_;
  std::mutex mu_;
  std::condition_variable queued_cv_, done_cv_;
  std::deque<std::function<void()>> queue_;
  std::size_t unfinished_ = 0;  // queued + running
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace ranktune
