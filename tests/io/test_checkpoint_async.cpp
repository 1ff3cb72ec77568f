// checkpoint.async's saver (CheckpointAsync) at 1 and 2 ranks: the files it commits are byte for byte those of a
// synchronous save of the same state, the state is a snapshot taken in begin (training may change the tensors during
// the write), a failure injected at every phase of the background write or of the commit leaves `latest` on the
// previous checkpoint exactly as the synchronous save does, a crash in the background thread reaches the caller, the
// destructor joins a write it never commits, short host memory falls back to a synchronous save on every rank, and (on
// a GPU only) CUDA tensors staged through pinned memory give the synchronous save's files. Also the review's fixes
// (#19): a staging allocation failing on one rank saves synchronously on every rank, a writer thread that cannot start
// leaves the rank writing inline with the signal mask restored, a non-thread-safe HDF5 turns async off on every rank,
// the host memory check honours cgroup limits, and the HDF5 tensor write goes in slices that let another thread's
// HDF5 calls in, with the file's bytes unchanged.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "io/fixture_state.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint_async.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/checkpoint_verify.h"
#include "ranktune/io/h5.h"
#include "support/file_text.h"
#include "support/shared_scratch_dir.h"

namespace fs = std::filesystem;
using namespace ranktune;
using ranktune::test::fixture_state;
using ranktune::test::states_equal;

using ranktune::test::file_text;

namespace {

constexpr auto kLock = h5::FileLocking::best_effort;

std::string latest_of(const fs::path& dir) {
  std::string s = file_text(dir / kLatestName);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

class CheckpointAsyncTest : public testing::Test {
 protected:
  void SetUp() override {
    env_ = std::make_unique<MpiEnv>(nullptr, nullptr);
    scratch_ = std::make_unique<test::SharedScratchDir>(*env_, "ckpt_async_" + test::test_name());
  }
  void TearDown() override {
    scratch_.reset();
    env_.reset();
  }
  int rank() const { return env_->rank(); }
  int size() const { return env_->size(); }
  SaveRequest request(const fs::path& dir, long step) const {
    SaveRequest r;
    r.dir = dir;
    r.step = step;
    r.keep = 100;
    r.locking = kLock;
    r.meta = {"ddp", "test topology", 0x1234abcdULL, true};
    return r;
  }
  // Saves through the saver and commits at once (begin, then wait).
  SaveResult save_async(CheckpointAsync& saver, const SaveRequest& req, const CheckpointState& st) {
    CheckpointAsync::Begun b = saver.begin(req, st);
    if (b.result) return *b.result;
    EXPECT_TRUE(saver.pending());
    return saver.wait();
  }

  std::unique_ptr<MpiEnv> env_;
  std::unique_ptr<test::SharedScratchDir> scratch_;
};

}  // namespace

TEST_F(CheckpointAsyncTest, SameFilesAsASynchronousSaveAndASnapshotOfBegin) {
  const fs::path sync_dir = scratch_->path() / "sync", async_dir = scratch_->path() / "async";
  CheckpointAsync saver(*env_);
  // Every dtype, a 0-d tensor (the fixture), an empty one and a transposed view share the one staging buffer.
  auto state_of = [&](long step) {
    CheckpointState st = fixture_state(rank(), step);
    st.tensors["extra.empty"] = at::empty({0, 3}, at::kFloat);
    st.tensors["extra.transposed"] = (at::arange(35, at::kDouble).reshape({5, 7}) * step).to(at::kHalf).t();
    return st;
  };
  EXPECT_NE(saver.reserve(state_of(0)).find("of pageable host memory reserved for staging"), std::string::npos);
  for (long step : {3, 6}) {  // both saves use the reserved buffer
    const SaveResult s = checkpoint_save(*env_, request(sync_dir, step), state_of(step));
    ASSERT_TRUE(s.ok()) << s.message;
    CheckpointState live = state_of(step);
    // The background write starts only once training has changed the live tensors in place: the checkpoint must
    // hold them as they were at begin.
    std::promise<void> changed;
    std::shared_future<void> go = changed.get_future().share();
    SaveRequest req = request(async_dir, step);
    req.fault_hook = [go](SavePhase p) {
      if (p == SavePhase::rank_file_begin) go.wait();
    };
    CheckpointAsync::Begun b = saver.begin(req, live);
    ASSERT_FALSE(b.result) << b.result->message;
    EXPECT_TRUE(b.fallback.empty());
    for (auto& [name, t] : live.tensors)
      if (t.numel() > 0 && t.is_floating_point()) t.add_(1);
    changed.set_value();
    std::optional<SaveResult> a;
    while (!(a = saver.poll())) {
    }
    ASSERT_TRUE(a->ok()) << a->message;
    EXPECT_FALSE(saver.pending());
    EXPECT_EQ(latest_of(async_dir), step_dir_name(step));
    EXPECT_EQ(a->bytes, s.bytes);
    EXPECT_GT(a->write_bytes, 0u);
    const Manifest ms = manifest_read(s.step_dir), ma = manifest_read(a->step_dir);
    ASSERT_EQ(ma.files.size(), static_cast<std::size_t>(size()));
    for (int r = 0; r < size(); ++r) {  // the same bytes: HDF5 files without timestamps, same content
      EXPECT_EQ(ma.files[r].crc32c, ms.files[r].crc32c) << "rank file " << r << " of step " << step;
      EXPECT_EQ(ma.files[r].size, ms.files[r].size);
    }
  }
  const auto lc = checkpoint_resume(*env_, "auto", async_dir, kLock);
  ASSERT_TRUE(lc);
  std::string why;
  EXPECT_TRUE(states_equal(lc->state, state_of(6), &why)) << why;
  if (rank() == 0) EXPECT_TRUE(checkpoint_verify(async_dir, kLock).ok());
}

TEST_F(CheckpointAsyncTest, FailureAtEveryPhaseKeepsLatestGood) {
  const fs::path dir = scratch_->path() / "ckpt";
  CheckpointAsync saver(*env_);
  ASSERT_TRUE(save_async(saver, request(dir, 1), fixture_state(rank(), 1)).ok());
  long good = 1, step = 100;
  for (SavePhase phase : kAllSavePhases) {
    ++step;
    const std::string name = save_phase_name(phase);
    const int target = phase <= SavePhase::before_agree ? size() - 1 : 0;
    SaveRequest req = request(dir, step);
    req.fault_hook = [&](SavePhase p) {
      if (p == phase && rank() == target) throw std::runtime_error("injected I/O error at " + name);
    };
    const SaveResult r = save_async(saver, req, fixture_state(rank(), step));
    if (phase >= SavePhase::latest_renamed) {
      EXPECT_EQ(r.status, SaveStatus::committed) << name;
      good = step;
    } else {
      EXPECT_EQ(r.status, SaveStatus::failed) << name;
      EXPECT_NE(r.message.find("injected I/O error at " + name), std::string::npos) << r.message;
      EXPECT_NE(r.message.find("rank " + std::to_string(target)), std::string::npos) << r.message;
      EXPECT_FALSE(fs::exists(r.step_dir)) << name << ": the failed step was not cleaned up";
    }
    EXPECT_EQ(latest_of(dir), step_dir_name(good)) << name;
    const auto lc = checkpoint_resume(*env_, "auto", dir, kLock);
    ASSERT_TRUE(lc) << name;
    EXPECT_EQ(lc->manifest.step, good) << name;
  }
}

TEST_F(CheckpointAsyncTest, CrashInTheBackgroundWriteReachesTheCallerAndLatestStays) {
  if (size() != 1) GTEST_SKIP() << "a crashed rank leaves its peers in a collective; the launcher would kill them";
  const fs::path dir = scratch_->path() / "ckpt";
  CheckpointAsync saver(*env_);
  ASSERT_TRUE(save_async(saver, request(dir, 1), fixture_state(0, 1)).ok());
  for (SavePhase phase : {SavePhase::rank_file_begin, SavePhase::rank_file_written, SavePhase::rank_file_synced,
                          SavePhase::rank_file_renamed, SavePhase::before_agree}) {
    SaveRequest req = request(dir, 2);
    req.fault_hook = [&](SavePhase p) {
      if (p == phase) throw CheckpointCrash{p};
    };
    ASSERT_FALSE(saver.begin(req, fixture_state(0, 2)).result);
    EXPECT_THROW(saver.wait(), CheckpointCrash) << save_phase_name(phase);
    EXPECT_FALSE(saver.pending());
    EXPECT_EQ(latest_of(dir), "step_00000001") << save_phase_name(phase);
    EXPECT_FALSE(fs::exists(dir / "step_00000002" / kManifestName));
  }
  // A saver destroyed with a write in flight joins it and commits nothing.
  {
    CheckpointAsync dropped(*env_);
    ASSERT_FALSE(dropped.begin(request(dir, 3), fixture_state(0, 3)).result);
  }
  EXPECT_EQ(latest_of(dir), "step_00000001");
  EXPECT_FALSE(fs::exists(dir / "step_00000003" / kManifestName));
  // The next save over the leftovers commits.
  ASSERT_TRUE(save_async(saver, request(dir, 3), fixture_state(0, 3)).ok());
  EXPECT_EQ(latest_of(dir), "step_00000003");
  EXPECT_TRUE(checkpoint_verify(dir, kLock).ok());
}

TEST_F(CheckpointAsyncTest, ShortHostMemoryFallsBackToASynchronousSave) {
  const fs::path dir = scratch_->path() / "ckpt";
  CheckpointAsync saver(*env_);
  // Test hook: 0 MB available on rank 0's node only in a multi-node job; here every rank shares the node and its
  // environment, so set it on rank 0 alone to show the ranks agree.
  if (rank() == 0) setenv("RANKTUNE_TEST_MEM_AVAILABLE_MB", "0", 1);
  const std::string reserved = saver.reserve(fixture_state(rank(), 4));
  EXPECT_EQ(reserved.rfind("not reserved, rank 0: staging needs", 0), 0u) << reserved;
  const CheckpointAsync::Begun b = saver.begin(request(dir, 4), fixture_state(rank(), 4));
  unsetenv("RANKTUNE_TEST_MEM_AVAILABLE_MB");
  ASSERT_TRUE(b.result);
  EXPECT_FALSE(saver.pending());
  EXPECT_TRUE(b.result->ok()) << b.result->message;
  EXPECT_NE(b.fallback.find("rank 0: staging needs"), std::string::npos) << b.fallback;
  EXPECT_NE(b.fallback.find("MemAvailable is 0.00 GB"), std::string::npos) << b.fallback;
  EXPECT_EQ(b.fallback.rfind("host memory is short for checkpoint.async: ", 0), 0u) << b.fallback;
  EXPECT_EQ(latest_of(dir), "step_00000004");
  // With the memory there, the next save is asynchronous again.
  const CheckpointAsync::Begun again = saver.begin(request(dir, 5), fixture_state(rank(), 5));
  EXPECT_FALSE(again.result);
  EXPECT_TRUE(saver.wait().ok());
}

// A staging allocation that fails on one rank (a refused pinned allocation; test hook) used to fail that save and,
// the buffers being gone, every later one: now every rank gives its buffers back and saves that step synchronously,
// and the next save is asynchronous again.
TEST_F(CheckpointAsyncTest, FailedStagingSavesSynchronouslyOnEveryRank) {
  const fs::path dir = scratch_->path() / "ckpt";
  CheckpointAsync saver(*env_);
  const int failing = size() - 1;
  auto state_of = [&](long step) {  // a tensor on every rank: a rank without any has nothing to allocate
    CheckpointState st = fixture_state(rank(), step);
    st.tensors["extra.per_rank"] = at::full({16, 4}, static_cast<double>(rank() * 100 + step), at::kFloat);
    return st;
  };
  if (rank() == failing) setenv("RANKTUNE_TEST_ASYNC_FAULT", (std::to_string(failing) + ":stage_alloc").c_str(), 1);
  const std::string reserved = saver.reserve(state_of(2));
  if (rank() == failing) EXPECT_EQ(reserved.rfind("not reserved: RANKTUNE_TEST_ASYNC_FAULT", 0), 0u) << reserved;
  for (long step : {2, 3}) {  // not only the first save: each one falls back
    const CheckpointAsync::Begun b = saver.begin(request(dir, step), state_of(step));
    ASSERT_TRUE(b.result) << "step " << step << " went asynchronous although rank " << failing << " could not stage";
    EXPECT_FALSE(saver.pending());
    EXPECT_TRUE(b.result->ok()) << b.result->message;
    EXPECT_EQ(b.fallback.rfind("staging for checkpoint.async failed on rank " + std::to_string(failing) +
                                   ": RANKTUNE_TEST_ASYNC_FAULT: rank " + std::to_string(failing) +
                                   " cannot allocate its staging buffer",
                               0),
              0u)
        << b.fallback;
    EXPECT_EQ(latest_of(dir), step_dir_name(step));
  }
  unsetenv("RANKTUNE_TEST_ASYNC_FAULT");
  const CheckpointAsync::Begun again = saver.begin(request(dir, 4), state_of(4));
  EXPECT_FALSE(again.result);
  ASSERT_TRUE(saver.pending());
  EXPECT_TRUE(saver.wait().ok());
  const auto lc = checkpoint_resume(*env_, "auto", dir, kLock);
  ASSERT_TRUE(lc);
  std::string why;
  EXPECT_TRUE(states_equal(lc->state, state_of(4), &why)) << why;
}

// std::thread failing to start (EAGAIN; test hook on rank 0 only) used to leave the stop signals blocked and throw
// on that rank alone, out of a collective save: now rank 0 writes its file inline, the save stays pending and the
// commit runs on every rank.
TEST_F(CheckpointAsyncTest, WriterThreadThatCannotStartWritesInlineAndCommits) {
  const fs::path dir = scratch_->path() / "ckpt";
  CheckpointAsync saver(*env_);
  auto term_blocked = [] {
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, nullptr, &now);
    return sigismember(&now, SIGTERM) == 1;
  };
  const bool blocked_before = term_blocked();
  if (rank() == 0) setenv("RANKTUNE_TEST_ASYNC_FAULT", "0:thread", 1);
  CheckpointAsync::Begun b;
  EXPECT_NO_THROW(b = saver.begin(request(dir, 5), fixture_state(rank(), 5)));
  unsetenv("RANKTUNE_TEST_ASYNC_FAULT");
  EXPECT_EQ(term_blocked(), blocked_before) << "the signal mask was not restored";
  EXPECT_FALSE(b.result);
  ASSERT_TRUE(saver.pending());
  std::optional<SaveResult> r;
  while (!(r = saver.poll())) {
  }
  EXPECT_TRUE(r->ok()) << r->message;
  EXPECT_EQ(latest_of(dir), "step_00000005");
  if (rank() == 0) EXPECT_TRUE(checkpoint_verify(dir, kLock).ok());
}

// A non-thread-safe HDF5 on any rank (test hook on the last rank) turns checkpoint.async off on every rank, with the
// reason and the fix; this machine's HDF5 (Debian's) is thread-safe, so without the hook async stays on.
TEST_F(CheckpointAsyncTest, NonThreadSafeHdf5TurnsAsyncOffOnEveryRank) {
  EXPECT_EQ(CheckpointAsync::unavailable(*env_).empty(), h5::library_threadsafe());
  const int failing = size() - 1;
  if (rank() == failing)
    setenv("RANKTUNE_TEST_ASYNC_FAULT", (std::to_string(failing) + ":h5_not_threadsafe").c_str(), 1);
  const std::string why = CheckpointAsync::unavailable(*env_);
  unsetenv("RANKTUNE_TEST_ASYNC_FAULT");
  EXPECT_EQ(why.rfind("rank " + std::to_string(failing) + ": the HDF5 library ", 0), 0u) << why;
  EXPECT_NE(why.find("is not thread-safe"), std::string::npos) << why;
  EXPECT_NE(why.find("--enable-threadsafe"), std::string::npos) << why;
  if (rank() == 0) {
    setenv("RANKTUNE_TEST_ASYNC_FAULT", "0:bogus", 1);
    EXPECT_THROW(CheckpointAsync::unavailable(*env_), UsageError);  // rank 0 alone: no collective reached
    unsetenv("RANKTUNE_TEST_ASYNC_FAULT");
  }
}

// On a GPU (skipped elsewhere): CUDA tensors staged into pinned memory with non-blocking copies give the synchronous
// save's files, and a kernel changing the tensors right after begin does not reach the checkpoint.
TEST_F(CheckpointAsyncTest, CudaTensorsGiveTheSynchronousSavesFiles) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const fs::path sync_dir = scratch_->path() / "sync", async_dir = scratch_->path() / "async";
  auto on_gpu = [&](long step) {
    CheckpointState st = fixture_state(rank(), step);
    for (auto& [name, t] : st.tensors) t = t.to(at::kCUDA);
    st.tensors["big"] = (at::arange(1 << 22, at::kFloat) * static_cast<double>(step)).to(at::kCUDA);
    return st;
  };
  CheckpointAsync saver(*env_);
  saver.reserve(on_gpu(0));
  for (long step : {2, 4}) {
    const SaveResult s = checkpoint_save(*env_, request(sync_dir, step), on_gpu(step));
    ASSERT_TRUE(s.ok()) << s.message;
    CheckpointState live = on_gpu(step);
    std::promise<void> changed;
    std::shared_future<void> go = changed.get_future().share();
    SaveRequest req = request(async_dir, step);
    req.fault_hook = [go](SavePhase p) {
      if (p == SavePhase::rank_file_begin) go.wait();
    };
    ASSERT_FALSE(saver.begin(req, live).result);
    for (auto& [name, t] : live.tensors)
      if (t.numel() > 0 && t.is_floating_point()) t.mul_(3).add_(1);
    changed.set_value();
    const SaveResult a = saver.wait();
    ASSERT_TRUE(a.ok()) << a.message;
    const Manifest ms = manifest_read(s.step_dir), ma = manifest_read(a.step_dir);
    for (int r = 0; r < size(); ++r) EXPECT_EQ(ma.files[r].crc32c, ms.files[r].crc32c) << "rank file " << r;
  }
}

// The staging blocks (meta tensors: sizes without memory): 1 GiB blocks filled in order, a tensor that does not fit
// opens the next block, a tensor bigger than 1 GiB makes every block its power of two.
TEST(StageLayoutTest, BlocksArePowersOfTwoFilledInOrder) {
  constexpr std::uint64_t kGiB = std::uint64_t{1} << 30, kMB400 = 400'000'000;
  CheckpointState st;
  for (const char* name : {"a", "b", "c", "d", "e"})
    st.tensors[name] =
        at::empty({static_cast<std::int64_t>(kMB400 / 4)}, at::TensorOptions(at::kMeta).dtype(at::kFloat));
  StageLayout l = stage_layout(st);
  ASSERT_EQ(l.entries.size(), 5u);
  EXPECT_EQ(l.bytes, 5 * kMB400);
  ASSERT_EQ(l.blocks.size(), 3u);  // a b | c d | e
  EXPECT_EQ(l.blocks[0], kGiB);
  EXPECT_EQ(l.blocks[1], kGiB);
  EXPECT_EQ(l.blocks[2], kMB400);  // the last block as used (pageable: no rounding)
  EXPECT_EQ(l.entries[1].block, 0u);
  EXPECT_EQ(l.entries[1].offset, kMB400);  // 400 MB is a multiple of the 64-byte alignment
  EXPECT_EQ(l.entries[2].block, 1u);
  EXPECT_EQ(l.entries[2].offset, 0u);
  EXPECT_EQ(l.entries[4].block, 2u);
  EXPECT_EQ(l.allocated(), 2 * kGiB + kMB400);
  EXPECT_TRUE(l == stage_layout(st));
  st.tensors["b"] =
      at::empty({3, static_cast<std::int64_t>(kMB400 / 4)}, at::TensorOptions(at::kMeta).dtype(at::kFloat));
  l = stage_layout(st);  // b is 1.2 GB: 2 GiB blocks, a b c | d e
  ASSERT_EQ(l.blocks.size(), 2u);
  EXPECT_EQ(l.blocks[0], 2 * kGiB);
  EXPECT_EQ(l.entries[2].block, 0u);
  EXPECT_EQ(l.entries[3].block, 1u);
  EXPECT_EQ(l.entries[4].offset, kMB400);
  EXPECT_FALSE(l == stage_layout(CheckpointState{}));
}

// --- host memory: MemAvailable and the memory cgroup (pure, the files as strings) -----------------------------------

namespace {

TextFileReader files(std::map<std::string, std::string> contents) {
  return [contents = std::move(contents)](const std::string& path) -> std::optional<std::string> {
    const auto it = contents.find(path);
    if (it == contents.end()) return std::nullopt;
    return it->second;
  };
}

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
const std::string kMeminfo = "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   32768000 kB\n";
constexpr std::uint64_t kMemAvailable = std::uint64_t{32768000} << 10;

}  // namespace

TEST(HostMemoryTest, MemAvailableAloneWithoutACgroupLimit) {
  HostMemory m = host_memory_available(files({{"/proc/meminfo", kMeminfo}}));
  EXPECT_EQ(m.bytes, kMemAvailable);
  EXPECT_EQ(m.what, "MemAvailable");
  // cgroup v2 without a limit anywhere ("max"; the root has no memory.max at all)
  m = host_memory_available(files({{"/proc/meminfo", kMeminfo},
                                   {"/proc/self/cgroup", "0::/user.slice/session-1.scope\n"},
                                   {"/sys/fs/cgroup/user.slice/session-1.scope/memory.max", "max\n"},
                                   {"/sys/fs/cgroup/user.slice/session-1.scope/memory.current", "123456789\n"},
                                   {"/sys/fs/cgroup/user.slice/memory.max", "max\n"},
                                   {"/sys/fs/cgroup/user.slice/memory.current", "223456789\n"}}));
  EXPECT_EQ(m.bytes, kMemAvailable);
  EXPECT_EQ(m.what, "MemAvailable");
  EXPECT_EQ(host_memory_available(files({})).bytes, UINT64_MAX);  // nothing to compare with: no fallback
}

TEST(HostMemoryTest, CgroupV2LimitOfTheJobAboveTheStepBinds) {
  // A Slurm step: the limit is on the job's cgroup, two levels above this process's; the step's own is "max".
  const std::string job = "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_42";
  const HostMemory m = host_memory_available(files({
      {"/proc/meminfo", kMeminfo},
      {"/proc/self/cgroup", "0::/system.slice/slurmstepd.scope/job_42/step_0/user\n"},
      {job + "/step_0/user/memory.max", "max\n"},
      {job + "/step_0/user/memory.current", std::to_string(900 * kMiB) + "\n"},
      {job + "/step_0/memory.max", "max\n"},
      {job + "/step_0/memory.current", std::to_string(950 * kMiB) + "\n"},
      {job + "/memory.max", std::to_string(4096 * kMiB) + "\n"},
      {job + "/memory.current", std::to_string(1000 * kMiB) + "\n"},
      // page cache the kernel drops first counts as free
      {job + "/memory.stat",
       "anon 734003200\nfile 314572800\ninactive_file " + std::to_string(100 * kMiB) + "\nactive_file 10485760\n"},
  }));
  EXPECT_EQ(m.bytes, (4096 - 1000 + 100) * kMiB);
  EXPECT_EQ(m.what, "cgroup " + job + " (limit 4.29 GB)");
}

TEST(HostMemoryTest, CgroupV2UsageOverTheLimitLeavesNothing) {
  const HostMemory m = host_memory_available(files({{"/proc/meminfo", kMeminfo},
                                                    {"/proc/self/cgroup", "0::/\n"},
                                                    {"/sys/fs/cgroup/memory.max", "1048576\n"},
                                                    {"/sys/fs/cgroup/memory.current", "2097152\n"}}));
  EXPECT_EQ(m.bytes, 0u);  // a container (cgroup namespace: its cgroup is "/" at the mount)
}

TEST(HostMemoryTest, CgroupV1MemoryController) {
  // v1 (and hybrid: the v2 line names a directory without memory files): the "memory" hierarchy's limit and usage.
  const std::string dir = "/sys/fs/cgroup/memory/slurm/uid_1000/job_7";
  const HostMemory m = host_memory_available(files({
      {"/proc/meminfo", kMeminfo},
      {"/proc/self/cgroup", "12:cpu,cpuacct:/slurm/uid_1000/job_7\n11:memory:/slurm/uid_1000/job_7\n0::/\n"},
      {dir + "/memory.limit_in_bytes", std::to_string(8192 * kMiB) + "\n"},
      {dir + "/memory.usage_in_bytes", std::to_string(6000 * kMiB) + "\n"},
      {dir + "/memory.stat", "cache 1\ninactive_file 5\ntotal_inactive_file " + std::to_string(192 * kMiB) + "\n"},
      // v1's "no limit" is a huge number, at the root and at uid_1000
      {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"},
      {"/sys/fs/cgroup/memory/memory.usage_in_bytes", "60000000000\n"},
  }));
  EXPECT_EQ(m.bytes, (8192 - 6000 + 192) * kMiB);
  EXPECT_EQ(m.what, "cgroup " + dir + " (limit 8.59 GB)");
  // MemAvailable binds when it is the lower figure.
  const HostMemory low = host_memory_available(files({
      {"/proc/meminfo", "MemAvailable:    1024 kB\n"},
      {"/proc/self/cgroup", "11:memory:/slurm/uid_1000/job_7\n"},
      {dir + "/memory.limit_in_bytes", std::to_string(8192 * kMiB) + "\n"},
      {dir + "/memory.usage_in_bytes", "0\n"},
  }));
  EXPECT_EQ(low.bytes, 1024u << 10);
  EXPECT_EQ(low.what, "MemAvailable");
}

// --- the HDF5 tensor write in slices --------------------------------------------------------------------------------

namespace {

std::string write_file(const fs::path& path, const std::map<std::string, at::Tensor>& tensors,
                       std::size_t slice_bytes) {
  h5::File f = h5::file_create(path.string(), kLock);
  h5::TensorWriteOptions o;
  o.slice_bytes = slice_bytes;
  for (const auto& [name, t] : tensors) h5::tensor_write(f.get(), name, t, o);
  h5::file_close(f);
  return file_text(path);
}

}  // namespace

// Slices of whole chunks give the very bytes of one write: shapes whose leading extent is not a multiple of the
// chunk's or of the slice's, every rank of tensor, bf16's committed type, a 0-d and an empty tensor.
TEST(H5SlicedWriteTest, SameBytesAsOneWrite) {
  test::ScratchDir scratch("h5_sliced");
  std::map<std::string, at::Tensor> t;
  t["a/matrix"] = at::randn({2050, 1024}).to(at::kBFloat16);   // 4 KiB rows: 256-row chunks, 8 per slice
  t["a/vector"] = at::arange(3'000'001, at::kFloat);           // 1-D: 262144-element chunks
  t["b/cube"] = at::randn({37, 300, 129}, at::kDouble);        // 302 KiB rows: 3-row chunks
  t["b/wide"] = at::randint(0, 100, {3, 600'000}, at::kLong);  // a row above the 1 MiB chunk: 1-row chunks
  t["c/scalar"] = at::scalar_tensor(3.5, at::kFloat);
  t["c/empty"] = at::empty({0, 7}, at::kInt);
  const std::string whole = write_file(scratch.path() / "whole.h5", t, 0);
  for (std::size_t slice : {std::size_t{1}, std::size_t{1} << 20, std::size_t{3} << 20}) {
    const std::string sliced = write_file(scratch.path() / ("sliced_" + std::to_string(slice) + ".h5"), t, slice);
    EXPECT_EQ(sliced.size(), whole.size()) << "slice " << slice;
    EXPECT_TRUE(sliced == whole) << "slice " << slice << ": the file's bytes differ from one write's";
  }
  h5::File f = h5::file_open((scratch.path() / "sliced_1.h5").string(), kLock);
  for (const auto& [name, x] : t) EXPECT_TRUE(at::equal(h5::tensor_read(f.get(), name), x)) << name;
}

// The point of the slices: another thread's HDF5 calls (the training thread reading dataset rows during a background
// checkpoint write) get in between them. One write of the whole tensor holds HDF5's global lock throughout, and a
// read waits for all of it; in slices of 1 MiB no read waits for more than a small part of the write.
TEST(H5SlicedWriteTest, AnotherThreadsReadsGetInBetweenSlices) {
  if (!h5::library_threadsafe()) GTEST_SKIP() << "HDF5 is not thread-safe: two threads must not call it at once";
  using Clock = std::chrono::steady_clock;
  test::ScratchDir scratch("h5_slices_interleave");
  {
    h5::File f = h5::file_create((scratch.path() / "rows.h5").string(), kLock);
    h5::tensor_write(f.get(), "rows", at::arange(64 * 128, at::kInt).reshape({64, 128}));
    h5::file_close(f);
  }
  h5::File rows = h5::file_open((scratch.path() / "rows.h5").string(), kLock);
  const at::Tensor big = at::arange(std::int64_t{64} << 20, at::kInt).reshape({-1, 1024});  // 256 MiB
  std::atomic<bool> writing{true};
  double write_s = 0;
  std::thread writer([&] {
    h5::File f = h5::file_create((scratch.path() / "big.h5").string(), kLock);
    h5::TensorWriteOptions o;
    o.slice_bytes = std::size_t{1} << 20;
    const auto t0 = Clock::now();
    h5::tensor_write(f.get(), "big", big, o);
    write_s = std::chrono::duration<double>(Clock::now() - t0).count();
    writing = false;
    h5::file_close(f);
  });
  double longest = 0;  // the longest read
  int reads = 0;
  while (writing) {
    const auto t0 = Clock::now();
    h5::tensor_read(rows.get(), "rows");
    longest = std::max(longest, std::chrono::duration<double>(Clock::now() - t0).count());
    ++reads;
  }
  writer.join();
  EXPECT_LT(longest, write_s / 4) << reads << " reads during a write of " << write_s << " s";
}
