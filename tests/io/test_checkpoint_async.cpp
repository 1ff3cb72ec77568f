// checkpoint.async's saver (CheckpointAsync) at 1 and 2 ranks: the files it commits are byte for byte those of a
// synchronous save of the same state, the state is a snapshot taken in begin (training may change the tensors during
// the write), a failure injected at every phase of the background write or of the commit leaves `latest` on the
// previous checkpoint exactly as the synchronous save does, a crash in the background thread reaches the caller, the
// destructor joins a write it never commits, short host memory falls back to a synchronous save on every rank, and (on
// a GPU only) CUDA tensors staged through pinned memory give the synchronous save's files.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include "io/fixture_state.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint_async.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/checkpoint_verify.h"
#include "support/shared_scratch_dir.h"

namespace fs = std::filesystem;
using namespace ranktune;
using ranktune::test::fixture_state;
using ranktune::test::states_equal;

namespace {

constexpr auto kLock = h5::FileLocking::best_effort;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::string latest_of(const fs::path& dir) {
  std::string s = read_text(dir / kLatestName);
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
  EXPECT_EQ(latest_of(dir), "step_00000004");
  // With the memory there, the next save is asynchronous again.
  const CheckpointAsync::Begun again = saver.begin(request(dir, 5), fixture_state(rank(), 5));
  EXPECT_FALSE(again.result);
  EXPECT_TRUE(saver.wait().ok());
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
