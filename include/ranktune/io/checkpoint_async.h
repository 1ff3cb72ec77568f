// defines: CheckpointAsync, the saver of checkpoint.async: the state is staged to host memory (pinned for CUDA
// tensors, buffers reused from one save to the next), this rank's file is written, fsynced, renamed and checksummed
// on a background thread while training goes on, and the agreement, manifest and `latest` run later on the main
// thread, collectively, at a step boundary (poll/wait): the commit protocol of checkpoint_save, call for call. The
// background thread talks to no other rank (MPI is started for one thread's calls), so it never competes with the
// gradient all-reduce. Also host_memory_available, the memory check of staging (MemAvailable and cgroup limits).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
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

// TEST HOOK (not for production runs): RANKTUNE_TEST_ASYNC_FAULT=RANK:KIND makes rank RANK meet a failure that a
// test cannot provoke otherwise: `stage_alloc` (every staging allocation throws, as a refused pinned allocation does),
// `thread` (starting the writer thread fails with EAGAIN), `h5_not_threadsafe` (HDF5 counts as not thread-safe).
class CheckpointAsync {
 public:
  explicit CheckpointAsync(const MpiEnv& env) : env_(env) {}
  // Collective, at start: why checkpoint.async cannot run in this job ("" when it can), the same on every rank. The
  // background writer calls HDF5 while the training thread reads prepared-dataset rows through it, so every rank's
  // HDF5 must be thread-safe; else the caller saves synchronously. UsageError for a malformed test hook.
  static std::string unavailable(const MpiEnv& env);
  // Joins a write still running (a background write is never abandoned half-way). Nothing is committed then: the
  // step stays uncommitted and `latest` names the previous checkpoint, as after a crash.
  ~CheckpointAsync();
  CheckpointAsync(const CheckpointAsync&) = delete;
  CheckpointAsync& operator=(const CheckpointAsync&) = delete;

  struct Begun {
    std::optional<SaveResult> result;  // the save ended in begin: synchronous fallback, or a failed preparation
    // Why it was saved synchronously, the same on every rank: "host memory is short for checkpoint.async: ..." or
    // "staging for checkpoint.async failed on rank R: ...".
    std::string fallback;
    double stage_seconds = 0;        // the host copy (this rank)
    std::uint64_t staged_bytes = 0;  // tensors staged by this rank
  };
  // Collective; only while !pending() (wait() first). Stages `state`, prepares step_N/ and starts the write. When the
  // staging buffers this node's ranks would add do not fit in 90% of host_memory_available(), or staging fails on any
  // rank (a pinned allocation refused), every rank gives its buffers back and saves synchronously instead
  // (checkpoint_save); `fallback` says why, and the next save tries asynchronously again. If the writer thread cannot
  // be started (EAGAIN), this rank writes its file here, on the calling thread, and the save stays pending for the
  // collective commit as usual.
  Begun begin(const SaveRequest& req, const CheckpointState& state);
  // Collective; before the first save. Allocates the staging buffer for a state laid out as `state` is now, so that
  // the first save does not pay for it in its stall (pinning 15 GB of host memory takes seconds); skipped when the
  // node lacks the memory. Returns what it did, for the log.
  std::string reserve(const CheckpointState& state);
  bool pending() const { return active_; }
  long pending_step() const { return req_.step; }
  // Collective: nullopt while the write of any rank runs; else the save's result (committed or failed), as
  // checkpoint_save returns it. An exception of the background thread that is not an I/O failure (a test's
  // CheckpointCrash) is rethrown here.
  std::optional<SaveResult> poll();
  // Collective: waits for this rank's write, then commits.
  SaveResult wait();

 private:
  std::string stage(const StageLayout& layout, const CheckpointState& state, CheckpointState& staged);
  void allocate(const StageLayout& layout, const CheckpointState& state);
  // Drops the buffers. give_back: the memory is meant to leave the process (memory short, an allocation failed, a
  // new layout), so pinned blocks are also emptied out of LibTorch's pinned host allocator, which otherwise keeps
  // freed blocks cached and pinned.
  void release(bool give_back);
  std::string memory_short(const StageLayout& layout, std::uint64_t extra);
  void write_rank_file(int rank, int size);

  const MpiEnv& env_;
  SaveRequest req_;
  SavePrepared prepared_;
  CheckpointState staged_;                     // what the background thread writes
  std::vector<at::Tensor> blocks_;             // the host buffers (uint8), kept for the next save
  StageLayout layout_;                         // what blocks_ hold
  bool pinned_ = false;                        // blocks_ are pinned (set before they are allocated)
  std::map<std::string, at::Tensor> buffers_;  // views of blocks_, one per tensor
  RankFileWritten written_;
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  bool active_ = false;  // a save is begun and not yet committed (its file written by writer_, or inline)
  std::thread writer_;
  double begin_stall_ = 0;
};

// Host memory this process can still take: /proc/meminfo's MemAvailable, lowered to its memory cgroup's headroom
// where that is less (a Slurm job or a container is killed at its cgroup limit long before the node runs out).
// Headroom of a cgroup and of each ancestor up to the mount (a job's limit often sits above the step's cgroup): v2
// memory.max less memory.current under /sys/fs/cgroup/<path of /proc/self/cgroup's "0::" line>, v1
// memory.limit_in_bytes less memory.usage_in_bytes under /sys/fs/cgroup/memory/<path of its "memory" line>; the page
// cache the kernel reclaims first (memory.stat's inactive_file) is counted as free, as MemAvailable does. "max" or
// an absent file: no limit at that level. `what` names the binding figure, for the log.
struct HostMemory {
  std::uint64_t bytes = UINT64_MAX;  // UINT64_MAX: nothing to compare with
  std::string what;                  // "MemAvailable" or "cgroup <dir> (limit X GB)"
};
// Pure: every file through `read` (nullopt: absent), so tests give the contents as strings.
using TextFileReader = std::function<std::optional<std::string>(const std::string& path)>;
HostMemory host_memory_available(const TextFileReader& read);
// The same from the real files. TEST HOOK: RANKTUNE_TEST_MEM_AVAILABLE_MB replaces it (tests of the synchronous
// fallback); unset in real runs.
HostMemory host_memory_available();

}  // namespace ranktune
