// defines: CheckpointAsync, the saver of checkpoint.async: the state is staged to host memory (pinned for CUDA
// tensors, buffers reused from one save to the next), this rank's file is written, fsynced, renamed and checksummed
// on a background thread while training goes on, and the agreement, manifest and `latest` run later on the main
// thread, collectively, at a step boundary (poll/wait): the commit protocol of checkpoint_save, call for call. The
// background thread talks to no other rank (MPI is started for one thread's calls), so it never competes with the
// gradient all-reduce.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ranktune/io/checkpoint.h"

namespace ranktune {

// Where the staging buffers hold each tensor (name, dtype, shape), in the state's order at 64-byte aligned offsets of
// a few large blocks; pinned when any tensor is on a GPU. The pinned host allocator rounds every allocation up to a
// power of two, so the blocks are powers of two (1 GiB, or the largest tensor's power of two if bigger) filled in
// order, and only the last one is cut to its use: the memory held stays within a largest tensor per block of the
// state's size, where one allocation could cost twice it. A save with the same layout as the last reuses the blocks.
struct StageLayout {
  struct Entry {
    std::string key;  // "name dtype [shape]"
    std::size_t block = 0;
    std::uint64_t offset = 0;
  };
  std::vector<Entry> entries;
  std::vector<std::uint64_t> blocks;  // bytes of each block (what is allocated)
  std::uint64_t bytes = 0;            // the tensors' bytes
  bool pinned = false;
  std::uint64_t allocated() const;
  bool operator==(const StageLayout& o) const;
};
StageLayout stage_layout(const CheckpointState& state);

class CheckpointAsync {
 public:
  explicit CheckpointAsync(const MpiEnv& env) : env_(env) {}
  // Joins a write still running (a background write is never abandoned half-way). Nothing is committed then: the
  // step stays uncommitted and `latest` names the previous checkpoint, as after a crash.
  ~CheckpointAsync();
  CheckpointAsync(const CheckpointAsync&) = delete;
  CheckpointAsync& operator=(const CheckpointAsync&) = delete;

  struct Begun {
    std::optional<SaveResult> result;  // the save ended in begin: synchronous fallback, or a failed preparation
    std::string fallback;              // why it was saved synchronously (host memory); the same on every rank
    double stage_seconds = 0;          // the host copy (this rank)
    std::uint64_t staged_bytes = 0;    // tensors staged by this rank
  };
  // Collective; only while !pending() (wait() first). Stages `state`, prepares step_N/ and starts the write. When the
  // staging buffers this node's ranks would add do not fit in 90% of MemAvailable (/proc/meminfo), every rank saves
  // synchronously instead (checkpoint_save) and `fallback` says why.
  Begun begin(const SaveRequest& req, const CheckpointState& state);
  // Collective; before the first save. Allocates the staging buffer for a state laid out as `state` is now, so that
  // the first save does not pay for it in its stall (pinning 15 GB of host memory takes seconds); skipped when the
  // node lacks the memory. Returns what it did, for the log.
  std::string reserve(const CheckpointState& state);
  bool pending() const { return writer_.joinable(); }
  long pending_step() const { return req_.step; }
  // Collective: nullopt while the write of any rank runs; else the save's result (committed or failed), as
  // checkpoint_save returns it. An exception of the background thread that is not an I/O failure (a test's
  // CheckpointCrash) is rethrown here.
  std::optional<SaveResult> poll();
  // Collective: waits for this rank's write, then commits.
  SaveResult wait();

 private:
  std::string stage(const CheckpointState& state, CheckpointState& staged);
  void allocate(const StageLayout& layout, const CheckpointState& state);
  void release();
  std::string memory_short(const StageLayout& layout, std::uint64_t extra);

  const MpiEnv& env_;
  SaveRequest req_;
  SavePrepared prepared_;
  CheckpointState staged_;                     // what the background thread writes
  std::vector<at::Tensor> blocks_;             // the host buffers (uint8), kept for the next save
  StageLayout layout_;                         // what blocks_ hold
  std::map<std::string, at::Tensor> buffers_;  // views of blocks_, one per tensor
  RankFileWritten written_;
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  std::thread writer_;
  double begin_stall_ = 0;
};

// Bytes the kernel can give without swapping (/proc/meminfo MemAvailable). TEST HOOK: RANKTUNE_TEST_MEM_AVAILABLE_MB
// replaces it (tests of the synchronous fallback); unset in real runs.
std::uint64_t host_mem_available_bytes();

}  // namespace ranktune
