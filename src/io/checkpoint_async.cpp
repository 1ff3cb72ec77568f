// checkpoint.async: stage on the main thread, write on a background thread, commit on the main thread. The split
// points are checkpoint.h's three calls, so an asynchronous save runs the synchronous save's code and protocol.
#include "ranktune/io/checkpoint_async.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <pthread.h>
#ifdef RANKTUNE_HAVE_CUDA
#include <ATen/core/CachingHostAllocator.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/h5.h"

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

// The test hook RANKTUNE_TEST_ASYNC_FAULT (checkpoint_async.h): whether it names this rank and `kind`.
constexpr const char* kFaultVar = "RANKTUNE_TEST_ASYNC_FAULT";
constexpr const char* kFaultKinds[] = {"stage_alloc", "thread", "h5_not_threadsafe"};

bool test_fault(int rank, std::string_view kind) {
  const char* v = std::getenv(kFaultVar);
  if (!v || !*v) return false;
  long r = -1;
  int used = 0;
  const bool parsed = std::sscanf(v, "%ld:%n", &r, &used) == 1 && used > 0 && r >= 0 &&
                      std::any_of(std::begin(kFaultKinds), std::end(kFaultKinds),
                                  [&](const char* k) { return std::strcmp(v + used, k) == 0; });
  if (!parsed)
    throw UsageError(std::string(kFaultVar) + "='" + v + "' is not RANK:stage_alloc|thread|h5_not_threadsafe",
                     "it is a test hook: unset it for real runs");
  return r == rank && kind == v + used;
}

// An exception's message on one line (LibTorch's may carry a backtrace after it).
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10_error ? c10_error->what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

// Pinned blocks freed by LibTorch stay pinned in its host allocator's cache until emptied.
void pinned_cache_empty() {
#ifdef RANKTUNE_HAVE_CUDA
  if (at::hasCUDA()) at::getHostAllocator(at::kCUDA)->empty_cache();
#endif
}

// The stop signals stay blocked while it lives (a thread started meanwhile inherits the mask), whatever throws.
class StopSignalsBlocked {
 public:
  StopSignalsBlocked() {
    sigset_t stop;
    sigemptyset(&stop);
    for (int sig : {SIGTERM, SIGUSR1, SIGINT, SIGHUP}) sigaddset(&stop, sig);
    pthread_sigmask(SIG_BLOCK, &stop, &old_);
  }
  ~StopSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  StopSignalsBlocked(const StopSignalsBlocked&) = delete;
  StopSignalsBlocked& operator=(const StopSignalsBlocked&) = delete;

 private:
  sigset_t old_;
};

// --- host memory ---------------------------------------------------------------------------------------------------

std::optional<std::uint64_t> number(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  const char* p = text->c_str();
  while (*p == ' ' || *p == '\t') ++p;
  if (*p < '0' || *p > '9') return std::nullopt;  // "max", or garbage: no limit
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(p, &end, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<std::uint64_t>(v);
}

// The value of `key` (a line "key value") in a memory.stat or /proc/meminfo text; nothing when absent.
std::optional<std::uint64_t> field(const std::optional<std::string>& text, std::string_view key) {
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string k;
  std::uint64_t v = 0;
  std::string rest;
  while (in >> k >> v) {
    std::getline(in, rest);
    if (k == key) return v;
  }
  return std::nullopt;
}

// This process's cgroup path of hierarchy `v2` ("0::/path") or of the v1 hierarchy holding the memory controller.
std::optional<std::string> cgroup_path(const std::string& self_cgroup, bool v2) {
  std::istringstream in(self_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    const auto a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (v2 && id == "0" && controllers.empty()) return path;
    if (!v2 && ("," + controllers + ",").find(",memory,") != std::string::npos) return path;
  }
  return std::nullopt;
}

// The least headroom of the cgroup at `path` under `mount` and of its ancestors, with the binding level's account.
void cgroup_headroom(const TextFileReader& read, const std::string& mount, std::string path, const char* limit_file,
                     const char* usage_file, const char* inactive_key, HostMemory& best) {
  while (true) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    const std::string dir = mount + (path == "/" ? "" : path);
    const auto limit = number(read(dir + "/" + limit_file));
    const auto usage = number(read(dir + "/" + usage_file));
    if (limit && usage) {
      const std::uint64_t reclaimable = field(read(dir + "/memory.stat"), inactive_key).value_or(0);
      const std::uint64_t used = *usage > reclaimable ? *usage - reclaimable : 0;
      const std::uint64_t room = *limit > used ? *limit - used : 0;
      if (room < best.bytes) best = {room, "cgroup " + dir + " (limit " + gb(static_cast<double>(*limit)) + ")"};
    }
    if (path.empty() || path == "/") return;
    const auto slash = path.rfind('/');
    path = slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
  }
}

}  // namespace

HostMemory host_memory_available(const TextFileReader& read) {
  HostMemory best;
  if (const auto kib = field(read("/proc/meminfo"), "MemAvailable:")) best = {*kib << 10, "MemAvailable"};
  if (const auto self = read("/proc/self/cgroup")) {
    if (const auto p = cgroup_path(*self, true))
      cgroup_headroom(read, "/sys/fs/cgroup", *p, "memory.max", "memory.current", "inactive_file", best);
    if (const auto p = cgroup_path(*self, false))
      cgroup_headroom(read, "/sys/fs/cgroup/memory", *p, "memory.limit_in_bytes", "memory.usage_in_bytes",
                      "total_inactive_file", best);
  }
  return best;
}

HostMemory host_memory_available() {
  if (const char* v = std::getenv("RANKTUNE_TEST_MEM_AVAILABLE_MB"); v && *v)
    return {static_cast<std::uint64_t>(std::strtoull(v, nullptr, 10)) << 20, "MemAvailable"};
  return host_memory_available([](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  });
}

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

std::string CheckpointAsync::unavailable(const MpiEnv& env) {
  for (const char* kind : kFaultKinds) test_fault(env.rank(), kind);  // a malformed hook fails at start
  std::string why;
  if (!h5::library_threadsafe() || test_fault(env.rank(), "h5_not_threadsafe")) {
    unsigned major = 0, minor = 0, release = 0;
    H5get_libversion(&major, &minor, &release);
    why = "the HDF5 library " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release) +
          " on " + env.host() +
          " is not thread-safe, and the background write would call it while training reads "
          "the dataset through it; link ranktune against an HDF5 built with --enable-threadsafe (Debian's and "
          "Ubuntu's libhdf5 are)";
  }
  const host::Outcome o = host::worst(env, why.empty() ? 0 : 1, why);
  return o.code == 0 ? "" : "rank " + std::to_string(o.rank) + ": " + o.message;
}

CheckpointAsync::~CheckpointAsync() {
  if (writer_.joinable()) writer_.join();
}

// The blocks of `layout`, cut into one view per tensor of `state` (stage_layout(state) == layout).
void CheckpointAsync::allocate(const StageLayout& layout, const CheckpointState& state) {
  release(true);  // the old buffers go before the new ones come (the memory check counts them gone)
  pinned_ = layout.pinned;
  if (test_fault(env_.rank(), "stage_alloc"))
    throw OutOfMemoryError(std::string(kFaultVar) + ": rank " + std::to_string(env_.rank()) +
                           " cannot allocate its staging buffer");
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

void CheckpointAsync::release(bool give_back) {
  const bool pinned = std::exchange(pinned_, false) && !blocks_.empty();
  buffers_.clear();
  blocks_.clear();
  layout_ = StageLayout{};
  if (give_back && pinned) pinned_cache_empty();
}

// Collective. Empty when the buffers a save of `layout` would add fit in 90% of host_memory_available() on every
// node (the ranks of a node add theirs up; reused buffers are already counted out of it); else the first short
// rank's account, the same on every rank.
std::string CheckpointAsync::memory_short(const StageLayout& layout, std::uint64_t extra) {
  const std::uint64_t adds = extra + (layout == layout_ ? 0 : layout.allocated());
  const auto node_adds =
      static_cast<std::uint64_t>(host::sum(env_, static_cast<std::int64_t>(adds), host::Scope::node));
  const HostMemory avail = host_memory_available();
  std::string short_of;
  if (static_cast<double>(node_adds) > 0.9 * static_cast<double>(avail.bytes))
    short_of = "staging needs " + gb(static_cast<double>(node_adds)) + " of host memory on " + env_.host() + " (" +
               std::to_string(env_.local_size()) + " rank(s)), " +
               (avail.what == "MemAvailable" ? "MemAvailable is " : "the memory " + avail.what + " leaves ") +
               gb(static_cast<double>(avail.bytes));
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
    release(true);
    return "not reserved: " + first_line(e) + "; each save tries again";
  }
  char line[128];
  std::snprintf(line, sizeof line, "%.2f GB of %s host memory reserved for staging (%.2f GB of tensors) in %.2f s",
                static_cast<double>(layout.allocated()) / 1e9, layout.pinned ? "pinned" : "pageable",
                static_cast<double>(layout.bytes) / 1e9, since(start));
  return line;
}

// Copies every tensor into this saver's host buffer, without waiting for each copy from a GPU (one stream
// synchronisation per device at the end). CPU tensors are copied too: training updates them in place. Returns what
// went wrong (the buffers are released then).
std::string CheckpointAsync::stage(const StageLayout& layout, const CheckpointState& state, CheckpointState& staged) {
  staged = CheckpointState{};
  staged.blobs = state.blobs;
  staged.strings = state.strings;
  staged.ints = state.ints;
  try {
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
    staged = CheckpointState{};  // views of the buffers, which go too
    release(true);
    return first_line(e);
  }
  return "";
}

void CheckpointAsync::write_rank_file(int rank, int size) {
  try {
    written_ = checkpoint_rank_file_write(req_, prepared_, rank, size, staged_);
  } catch (...) {
    error_ = std::current_exception();
  }
  done_ = true;
}

CheckpointAsync::Begun CheckpointAsync::begin(const SaveRequest& req, const CheckpointState& state) {
  if (pending()) throw LibraryError("CheckpointAsync::begin while step " + std::to_string(req_.step) + " is pending");
  const auto start = Clock::now();
  Begun out;

  const StageLayout layout = stage_layout(state);
  if (const std::string short_of = memory_short(layout, blob_bytes(state)); !short_of.empty()) {
    out.fallback = "host memory is short for checkpoint.async: " + short_of;
    release(true);  // give back what an earlier save kept
    out.result = checkpoint_save(env_, req, state);
    return out;
  }

  const auto stage_start = Clock::now();
  const std::string stage_error = stage(layout, state, staged_);
  out.stage_seconds = since(stage_start);
  // A rank that could not stage (its buffers are gone) saves with the others, synchronously, from the live state: a
  // failed allocation must not cost the checkpoint, and the next save tries staging again.
  if (const host::Outcome o = host::worst(env_, stage_error.empty() ? 0 : 1, stage_error); o.code != 0) {
    release(true);
    out.fallback = "staging for checkpoint.async failed on rank " + std::to_string(o.rank) + ": " + o.message;
    out.result = checkpoint_save(env_, req, state);
    return out;
  }
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
  active_ = true;
  const int rank = env_.rank(), size = env_.size();
  try {
    // The stop signals stay with the training thread (the writer inherits the mask): the writer's system calls are
    // never the ones a SIGTERM or SIGUSR1 interrupts.
    const StopSignalsBlocked blocked;
    if (test_fault(rank, "thread"))
      throw std::system_error(EAGAIN, std::generic_category(), std::string(kFaultVar) + ": no writer thread");
    writer_ = std::thread([this, rank, size] { write_rank_file(rank, size); });
  } catch (const std::system_error& e) {
    // No thread (EAGAIN: the process or user is at its thread limit). This rank writes its file now, on this thread;
    // the save stays pending, so the commit still runs at a step boundary on every rank.
    logr() << "WARNING: checkpoint of step " << req_.step << ": cannot start the background writer (" << e.what()
           << "); this rank writes its file in the foreground";
    write_rank_file(rank, size);
  }
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
  if (writer_.joinable()) writer_.join();
  active_ = false;
  staged_ = CheckpointState{};  // the buffers stay in buffers_ for the next save
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  const auto commit_start = Clock::now();
  SaveResult r = checkpoint_save_commit(env_, req_, prepared_, written_);
  r.stall_seconds = begin_stall_ + since(commit_start);
  return r;
}

}  // namespace ranktune
