// checkpoint.async: stage on the main thread, write on a background thread, commit on the main thread. The split
// points are checkpoint.h's three calls, so an asynchronous save runs the synchronous save's code and protocol.
#include "ranktune/io/checkpoint_async.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}

std::uint64_t blob_bytes(const CheckpointState& state) {
  std::uint64_t n = 0;
  for (const auto& [name, b] : state.blobs) n += b.size();
  return n;
}

}  // namespace

std::uint64_t StageLayout::allocated() const {
  std::uint64_t n = 0;
  for (std::uint64_t b : blocks) n += b;
  return n;
}

bool StageLayout::operator==(const StageLayout& o) const {
  if (pinned != o.pinned || blocks != o.blocks || entries.size() != o.entries.size()) return false;
  for (std::size_t i = 0; i < entries.size(); ++i)
    if (entries[i].key != o.entries[i].key || entries[i].block != o.entries[i].block ||
        entries[i].offset != o.entries[i].offset)
      return false;
  return true;
}

StageLayout stage_layout(const CheckpointState& state) {
  constexpr std::uint64_t kAlign = 64;
  auto aligned = [](std::uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  auto pow2 = [](std::uint64_t n) {
    std::uint64_t p = 1;
    while (p < n) p <<= 1;
    return p;
  };
  StageLayout l;
  std::uint64_t block = std::uint64_t{1} << 30;
  for (const auto& [name, t] : state.tensors)
    if (t.defined()) block = std::max(block, pow2(aligned(t.nbytes())));
  std::uint64_t used = 0;  // of the last block
  for (const auto& [name, t] : state.tensors) {
    if (!t.defined()) continue;
    l.pinned = l.pinned || t.is_cuda();
    const std::uint64_t size = aligned(t.nbytes());
    if (l.blocks.empty() || used + size > block) {
      if (!l.blocks.empty()) l.blocks.back() = block;
      l.blocks.push_back(0);
      used = 0;
    }
    l.entries.push_back(
        {name + ' ' + c10::toString(t.scalar_type()) + ' ' + c10::str(t.sizes()), l.blocks.size() - 1, used});
    used += size;
    l.blocks.back() = used;
    l.bytes += t.nbytes();
  }
  // The last block: what it holds, rounded up to the power of two the pinned allocator takes anyway.
  if (!l.blocks.empty())
    l.blocks.back() = l.pinned ? pow2(std::max<std::uint64_t>(used, 1)) : std::max<std::uint64_t>(used, 1);
  return l;
}

std::uint64_t host_mem_available_bytes() {
  if (const char* v = std::getenv("RANKTUNE_TEST_MEM_AVAILABLE_MB"); v && *v)
    return static_cast<std::uint64_t>(std::strtoull(v, nullptr, 10)) << 20;
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib << 10;
  }
  return UINT64_MAX;  // no /proc/meminfo: nothing to compare with, so no fallback
}

CheckpointAsync::~CheckpointAsync() {
  if (writer_.joinable()) writer_.join();
}

// The blocks of `layout`, cut into one view per tensor of `state` (stage_layout(state) == layout).
void CheckpointAsync::allocate(const StageLayout& layout, const CheckpointState& state) {
  release();  // the old buffers go before the new ones come
  for (std::uint64_t bytes : layout.blocks)
    blocks_.push_back(at::empty({static_cast<std::int64_t>(bytes)},
                                at::TensorOptions().dtype(at::kByte).pinned_memory(layout.pinned)));
  std::size_t i = 0;
  for (const auto& [name, t] : state.tensors) {
    if (!t.defined()) continue;
    const StageLayout::Entry& e = layout.entries.at(i++);
    buffers_[name] = blocks_.at(e.block)
                         .narrow(0, static_cast<std::int64_t>(e.offset), static_cast<std::int64_t>(t.nbytes()))
                         .view(t.scalar_type())
                         .view(t.sizes());
  }
  layout_ = layout;
}

void CheckpointAsync::release() {
  buffers_.clear();
  blocks_.clear();
  layout_ = StageLayout{};
}

// Collective. Empty when the buffers a save of `layout` would add fit in 90% of MemAvailable on every node (the
// ranks of a node add theirs up; reused buffers are already counted out of MemAvailable); else the first short
// rank's account, the same on every rank.
std::string CheckpointAsync::memory_short(const StageLayout& layout, std::uint64_t extra) {
  const std::uint64_t adds = extra + (layout == layout_ ? 0 : layout.allocated());
  const auto node_adds =
      static_cast<std::uint64_t>(host::sum(env_, static_cast<std::int64_t>(adds), host::Scope::node));
  const std::uint64_t avail = host_mem_available_bytes();
  std::string short_of;
  if (static_cast<double>(node_adds) > 0.9 * static_cast<double>(avail))
    short_of = "staging needs " + gb(static_cast<double>(node_adds)) + " of host memory on " + env_.host() + " (" +
               std::to_string(env_.local_size()) + " rank(s)), MemAvailable is " + gb(static_cast<double>(avail));
  const host::Outcome lacking = host::worst(env_, short_of.empty() ? 0 : 1, short_of);
  return lacking.code == 0 ? "" : "rank " + std::to_string(lacking.rank) + ": " + lacking.message;
}

std::string CheckpointAsync::reserve(const CheckpointState& state) {
  if (pending()) throw LibraryError("CheckpointAsync::reserve while step " + std::to_string(req_.step) + " is pending");
  const StageLayout layout = stage_layout(state);
  if (const std::string short_of = memory_short(layout, 0); !short_of.empty())
    return "not reserved, " + short_of + "; each save checks again";
  const auto start = Clock::now();
  try {
    allocate(layout, state);
  } catch (const std::exception& e) {
    release();
    return std::string("not reserved: ") + e.what() + "; each save tries again";
  }
  char line[128];
  std::snprintf(line, sizeof line, "%.2f GB of %s host memory reserved for staging (%.2f GB of tensors) in %.2f s",
                static_cast<double>(layout.allocated()) / 1e9, layout.pinned ? "pinned" : "pageable",
                static_cast<double>(layout.bytes) / 1e9, since(start));
  return line;
}

// Copies every tensor into this saver's host buffer, without waiting for each copy from a GPU (one stream
// synchronisation per device at the end). CPU tensors are copied too: training updates them in place. Returns what
// went wrong, which the write reports as this rank's failure, as checkpoint_save does.
std::string CheckpointAsync::stage(const CheckpointState& state, CheckpointState& staged) {
  staged = CheckpointState{};
  staged.blobs = state.blobs;
  staged.strings = state.strings;
  staged.ints = state.ints;
  try {
    const StageLayout layout = stage_layout(state);
    if (!(layout == layout_)) allocate(layout, state);
    std::vector<c10::Device> devices;
    for (const auto& [name, t] : state.tensors) {
      if (!t.defined()) {
        staged.tensors[name] = t;
        continue;
      }
      at::Tensor& buf = buffers_.at(name);
      buf.copy_(t, /*non_blocking=*/t.is_cuda());
      if (t.is_cuda() && std::find(devices.begin(), devices.end(), t.device()) == devices.end())
        devices.push_back(t.device());
      staged.tensors[name] = buf;
    }
    for (const c10::Device& d : devices) c10::impl::VirtualGuardImpl(d.type()).getStream(d).synchronize();
  } catch (const std::exception& e) {
    release();
    return e.what();
  }
  return "";
}

CheckpointAsync::Begun CheckpointAsync::begin(const SaveRequest& req, const CheckpointState& state) {
  if (pending()) throw LibraryError("CheckpointAsync::begin while step " + std::to_string(req_.step) + " is pending");
  const auto start = Clock::now();
  Begun out;

  out.fallback = memory_short(stage_layout(state), blob_bytes(state));
  if (!out.fallback.empty()) {
    release();  // memory is short: give back what an earlier save kept
    out.result = checkpoint_save(env_, req, state);
    return out;
  }

  const auto stage_start = Clock::now();
  const std::string copy_error = stage(state, staged_);
  out.stage_seconds = since(stage_start);
  for (const auto& [name, t] : staged_.tensors)
    if (t.defined()) out.staged_bytes += t.nbytes();

  req_ = req;
  prepared_ = checkpoint_save_prepare(env_, req_, start);
  prepared_.stage_seconds = out.stage_seconds;
  if (prepared_.ended) {
    out.result = *prepared_.ended;
    out.result->stall_seconds = since(start);
    staged_ = CheckpointState{};
    return out;
  }
  written_ = RankFileWritten{};
  error_ = nullptr;
  done_ = false;
  const int rank = env_.rank(), size = env_.size();
  // The stop signals stay with the training thread (the writer inherits this mask): the writer's system calls are
  // never the ones a SIGTERM or SIGUSR1 interrupts.
  sigset_t stop_signals, old_mask;
  sigemptyset(&stop_signals);
  for (int sig : {SIGTERM, SIGUSR1, SIGINT, SIGHUP}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  writer_ = std::thread([this, rank, size, copy_error] {
    try {
      written_ = checkpoint_rank_file_write(req_, prepared_, rank, size, staged_, copy_error);
    } catch (...) {
      error_ = std::current_exception();
    }
    done_ = true;
  });
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  begin_stall_ = since(start);
  return out;
}

std::optional<SaveResult> CheckpointAsync::poll() {
  if (!pending()) throw LibraryError("CheckpointAsync::poll without a pending save");
  if (host::min(env_, done_ ? 1 : 0) == 0) return std::nullopt;
  return wait();
}

SaveResult CheckpointAsync::wait() {
  if (!pending()) throw LibraryError("CheckpointAsync::wait without a pending save");
  writer_.join();
  staged_ = CheckpointState{};  // the buffers stay in buffers_ for the next save
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  const auto commit_start = Clock::now();
  SaveResult r = checkpoint_save_commit(env_, req_, prepared_, written_);
  r.stall_seconds = begin_stall_ + since(commit_start);
  return r;
}

}  // namespace ranktune
