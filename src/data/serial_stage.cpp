#include "ranktune/data/serial_stage.h"

#include <algorithm>
#include <utility>

namespace ranktune {

SerialStage::SerialStage(std::size_t max_unfinished)
    : max_unfinished_(std::max<std::size_t>(max_unfinished, 1)), thread_([this] { run(); }) {}

SerialStage::~SerialStage() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    unfinished_ -= queue_.size();
    queue_.clear();
  }
  queued_cv_.notify_all();
  thread_.join();
}

void SerialStage::rethrow_locked() {
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void SerialStage::submit(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return error_ || unfinished_ < max_unfinished_; });
  rethrow_locked();
  queue_.push_back(std::move(fn));
  ++unfinished_;
  queued_cv_.notify_one();
}

void SerialStage::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return unfinished_ == 0; });
  rethrow_locked();
}

void SerialStage::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    queued_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    std::exception_ptr failed;
    try {
      job();
    } catch (...) {
      failed = std::current_exception();
    }
    job = nullptr;  // whatever the job holds is released before the caller learns it is done
    lock.lock();
    --unfinished_;
    if (failed) {
      if (!error_) error_ = failed;
      unfinished_ -= queue_.size();  // a failed stage runs nothing more
      queue_.clear();
    }
    done_cv_.notify_all();
  }
}

}  // namespace ranktune
