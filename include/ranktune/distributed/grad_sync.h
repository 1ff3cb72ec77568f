// defines: GradSync, DDP's gradient synchronisation: every trainable gradient lives in a flat bucket (param.grad() is
// a view into it), buckets are filled in reverse registration order (the order backward produces gradients) and each
// is all-reduced (average) through the Communicator as soon as its last gradient has been accumulated, while backward
// goes on. On CUDA the all-reduces run on a dedicated stream ordered after the compute stream by events.
//
//   GradSync sync(comm, model->named_parameters(), {cfg.parallel.bucket_mb});  // collective: checks + broadcast
//   for each optimizer step:
//     for micro in 0..accum-1:  sync.prepare(micro + 1 == accum);  loss.backward();
//     sync.finish();            // gradients now averaged over ranks, identical everywhere
//     clip_grad_norm(...); opt.step(lr); sync.zero_grad();
//
// Construction verifies that every rank has the same (name, shape, dtype, trainable) list (UsageError naming the first
// parameter that differs) and broadcasts every given parameter from rank 0. A trainable parameter that got no gradient
// on a rank in a whole accumulation window counts as zero there (its bucket goes out in finish(): no hang) and is
// reported once; one that got none on any rank is left without a gradient, so the optimizer skips it as it would in
// a single process (finish() all-reduces a small used-flag vector for that).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "ranktune/distributed/named_tensors.h"

namespace torch::autograd {
struct Node;
}

namespace ranktune {

class Communicator;

struct GradSyncOptions {
  double bucket_mb = 25;  // bucket capacity in MiB of gradient bytes; a larger parameter gets a bucket of its own
  bool trace = false;     // record when each bucket is launched, relative to the end of backward (overlap evidence)
};

// One all-reduce of one bucket, as recorded with GradSyncOptions::trace.
struct BucketLaunch {
  long step = 0;  // how many synchronised steps came before
  int bucket = 0;
  std::size_t bytes = 0;
  double launch_ms = 0;        // since prepare() of the last micro-step
  double backward_end_ms = 0;  // when finish() was called, same origin
  bool in_backward = false;    // launched from a gradient hook, i.e. overlapping the rest of backward
};

class GradSync {
 public:
  GradSync(Communicator& comm, const NamedTensors& params, GradSyncOptions options = {});
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Before each micro-step's backward; `sync` marks the last micro-step of the optimizer step: only then do hooks
  // launch all-reduces (earlier micro-steps just accumulate into the buckets).
  void prepare(bool sync);
  // After the last micro-step's backward: launches the buckets backward did not complete, waits for all of them.
  void finish();
  // Zeroes every bucket (and so every trainable gradient) in place, keeping the views.
  void zero_grad();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  std::vector<std::string> bucket_parameters(int bucket) const;  // names, in fill order
  // Trainable parameters that received no gradient on this rank in some accumulation window so far.
  std::vector<std::string> unused_parameters() const { return {reported_unused_.begin(), reported_unused_.end()}; }
  const std::vector<BucketLaunch>& trace() const { return trace_; }
  std::string format_trace() const;  // one line per launch, for the log
  std::string describe() const;      // "DDP: 3 buckets (25 MiB cap) over 22 trainable tensors, 1.1M params, mpi"

 private:
  struct Entry {
    std::string name;
    at::Tensor param;
    at::Tensor view;  // this parameter's slice of its bucket, shaped like the parameter
    int bucket = 0;
    bool touched = false;                                // got a gradient in the current accumulation window
    bool ready = false;                                  // got its gradient in the current synchronised micro-step
    std::shared_ptr<torch::autograd::Node> accumulator;  // held: the parameter keeps only a weak reference
    std::uintptr_t hook_key = 0;
  };
  struct Bucket {
    at::Tensor flat;
    std::vector<int> entries;
    int pending = 0;
  };
  struct CudaSide;

  void verify_parameter_lists(const NamedTensors& params);
  void broadcast_parameters(const NamedTensors& params);
  void build_buckets(const NamedTensors& params);
  void on_gradient(int entry);
  void keep_view(Entry& e);
  void launch_ready_buckets(bool in_backward);
  double ms_since_prepare() const;

  Communicator& comm_;
  GradSyncOptions options_;
  std::vector<Entry> entries_;
  std::vector<Bucket> buckets_;
  std::unique_ptr<CudaSide> cuda_;
  std::mutex mutex_;  // CUDA backward runs hooks on autograd's device threads
  bool window_open_ = false;
  bool sync_ = false;
  int next_bucket_ = 0;
  long steps_ = 0;
  std::int64_t prepare_ns_ = 0;
  std::set<std::string> reported_unused_;
  std::vector<BucketLaunch> trace_;
};

}  // namespace ranktune
