// defines: StepProfiler, LibTorch's Kineto profiler around train.profile_steps training steps after train.profile_skip
// warm-up steps, writing a chrome trace and a per-kernel table (time, calls, share of the steps' wall time, grouped by
// what the step spends it on) into output_dir; the table is what issue 17's speed work is planned from.
// Also profile_category(), the name patterns of that grouping (a pure function, unit-testable anywhere).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ranktune {

struct Config;

struct ProfileOptions {
  long first_step = 0;  // the run's first step index (a resumed run counts its warm-up from where it resumed)
  long skip = 0;        // warm-up steps left unprofiled
  long steps = 0;       // steps profiled
  std::string dir;      // where profile_trace.json and profile_kernels.md go
  int rank = 0;         // several ranks: every rank writes its own files, its rank in their names
  int world = 1;
  std::vector<int> gpus;  // CUDA devices synchronised around the window and read for peak memory; empty = CPU run
};

// The category of a kernel or CPU op, by name: matmul, attention, norm, rope, swiglu, loss, optimizer, copy/cast,
// elementwise, nccl, autograd (its host-side nodes), or other.
std::string profile_category(std::string_view name);

class StepProfiler {
 public:
  explicit StepProfiler(ProfileOptions o);
  ~StepProfiler();  // a run that stops inside the window still writes what was profiled
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;
  // Around each training step (0-based step index, as Trainer counts them): starts the profiler before the window's
  // first step, writes the files after its last.
  void step_begin(long step);
  void step_end(long step);
  // Whether `step` is the window's last: the trainer queues no step ahead of it (its kernels would be profiled too).
  bool last_profiled(long step) const { return step + 1 == o_.first_step + o_.skip + o_.steps; }

 private:
  void finish();
  ProfileOptions o_;
  bool active_ = false;
  bool done_ = false;
  long profiled_ = 0;
  double peak_gib_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// nullptr when train.profile_steps is 0, so that an unprofiled run pays one pointer test per step.
std::unique_ptr<StepProfiler> step_profiler_from_config(const Config& cfg, long first_step, int rank, int world,
                                                        std::vector<int> gpus);

}  // namespace ranktune
