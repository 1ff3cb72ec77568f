// The checkpoint protocol at 1 and 2 ranks: save -> load round trips (replicated and per-rank), RNG continuation,
// a committed step met by a save moved aside (never deleted) and written anew, newer committed steps moved aside once
// `latest` moves back, keep-last-N never deleting `latest`, a fault injected at every phase never leaving `latest` on
// a bad checkpoint, and hundreds of random corruptions caught before any tensor is used.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "io/fixture_state.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/checkpoint_verify.h"
#include "support/file_text.h"
#include "support/shared_scratch_dir.h"

namespace fs = std::filesystem;
using namespace ranktune;
using ranktune::test::fixture_state;
using ranktune::test::states_equal;

using ranktune::test::file_text;

namespace {

constexpr auto kLock = h5::FileLocking::best_effort;

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(s.data(), static_cast<std::streamsize>(s.size()));
}

std::string latest_of(const fs::path& dir) {
  std::string s = file_text(dir / kLatestName);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// The directories a save moved `step_name` aside to (step_name.replaced-<time>[-K]), sorted.
std::vector<fs::path> asides_of(const fs::path& dir, const std::string& step_name) {
  std::vector<fs::path> out;
  const std::string prefix = step_name + ".replaced-";
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The committed steps a listing by step name finds (the aside directories are not among them).
std::vector<long> committed_steps(const fs::path& dir) {
  std::vector<long> steps;
  for (const auto& e : fs::directory_iterator(dir))
    if (auto s = step_from_dir_name(e.path().filename().string()))
      if (fs::exists(e.path() / kManifestName)) steps.push_back(*s);
  std::sort(steps.begin(), steps.end());
  return steps;
}

class CheckpointTest : public testing::Test {
 protected:
  void SetUp() override {
    env_ = std::make_unique<MpiEnv>(nullptr, nullptr);
    scratch_ = std::make_unique<test::SharedScratchDir>(*env_, "ckpt_" + test::test_name());
    dir_ = scratch_->path() / "ckpt";  // not created: the protocol starts from a directory that does not exist yet
  }
  void TearDown() override {
    scratch_.reset();
    env_.reset();
  }
  void barrier() const { MPI_Barrier(MPI_COMM_WORLD); }
  int rank() const { return env_->rank(); }
  int size() const { return env_->size(); }

  SaveRequest request(long step, int keep = 100, bool replicated = true) const {
    SaveRequest r;
    r.dir = dir_;
    r.step = step;
    r.keep = keep;
    r.locking = kLock;
    r.meta = {"ddp", "test topology", 0x1234abcdULL, replicated};
    return r;
  }
  SaveResult save(long step, int keep = 100) const {
    return checkpoint_save(*env_, request(step, keep), fixture_state(rank(), step));
  }

  std::unique_ptr<MpiEnv> env_;
  std::unique_ptr<test::SharedScratchDir> scratch_;
  fs::path dir_;
};

}  // namespace

TEST_F(CheckpointTest, ReplicatedRoundTripAndRngContinuation) {
  const SaveResult r = save(5);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.step_dir, dir_ / "step_00000005");
  EXPECT_GT(r.bytes, 0u);
  EXPECT_EQ(latest_of(dir_), "step_00000005");
  const Manifest m = manifest_read(r.step_dir);
  EXPECT_EQ(m.step, 5);
  EXPECT_EQ(m.world_size, size());
  EXPECT_TRUE(m.replicated);
  EXPECT_EQ(m.mode, "ddp");
  EXPECT_EQ(m.config_hash, 0x1234abcdULL);
  for (const auto& e : fs::directory_iterator(r.step_dir))  // no temp files left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();

  const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
  ASSERT_TRUE(lc);
  EXPECT_EQ(lc->manifest.step, 5);
  EXPECT_TRUE(lc->has_rank_state);
  EXPECT_FALSE(lc->resharded);
  std::string why;
  EXPECT_TRUE(states_equal(lc->state, fixture_state(rank(), 5), &why)) << why;
  EXPECT_TRUE(states_equal(lc->shared, fixture_state(0, 5), &why)) << why;

  // The restored generator continues exactly where the saved one was.
  at::Generator saved = at::detail::createCPUGenerator(static_cast<std::uint64_t>(1000 + rank()));
  at::Generator restored = at::detail::createCPUGenerator(1);
  restored.set_state(checkpoint_blob_tensor(lc->state.blobs.at("rng.cpu")));
  EXPECT_TRUE(at::randn({64}, saved).equal(at::randn({64}, restored)));
}

TEST_F(CheckpointTest, PerRankRoundTripFromAnExplicitPath) {
  CheckpointState mine = fixture_state(rank(), 3);
  mine.tensors["shard"] = at::full({4, 4}, static_cast<double>(rank()), at::kBFloat16);
  const SaveResult r = checkpoint_save(*env_, request(3, 100, false), mine);
  ASSERT_TRUE(r.ok()) << r.message;
  const LoadedCheckpoint lc = checkpoint_load(*env_, r.step_dir, kLock);
  std::string why;
  EXPECT_TRUE(states_equal(lc.state, mine, &why)) << why;
  EXPECT_TRUE(lc.shared.empty());
  // The checkpoint root resolves through `latest`.
  EXPECT_EQ(checkpoint_load(*env_, dir_, kLock).manifest.step, 3);
  // A fresh start into a directory holding a committed checkpoint is refused (exit 2) on every rank; "overwrite"
  // moves the step aside (kept, under step_N.replaced-<time>) and removes `latest`.
  try {
    checkpoint_resume(*env_, "none", dir_, kLock);
    ADD_FAILURE() << "--resume=none into a directory with a committed checkpoint was accepted";
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::usage);
    EXPECT_NE(std::string(e.what()).find("already holds 1 committed checkpoint(s)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::exists(r.step_dir / "manifest.json"));
  barrier();  // every rank has looked before rank 0's "overwrite" below moves the step away
  EXPECT_FALSE(checkpoint_resume(*env_, "overwrite", dir_, kLock));
  EXPECT_FALSE(std::filesystem::exists(r.step_dir));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "latest"));
  EXPECT_FALSE(checkpoint_resume(*env_, "none", dir_, kLock));  // nothing committed left under the name of a step
}

// Every rank file repeats the manifest's mode and topology as root attributes (a file read alone says which run wrote
// it); a file that disagrees is refused, a file from before these attributes existed still loads, and a state may not
// take the reserved names.
TEST_F(CheckpointTest, RankFilesRecordModeAndTopology) {
  const SaveResult r = save(5);
  ASSERT_TRUE(r.ok()) << r.message;
  const fs::path mine = r.step_dir / rank_file_name(rank());
  {
    h5::File f = h5::file_open(mine.string(), kLock);
    EXPECT_EQ(h5::attr_read_string(f.get(), "mode"), "ddp");
    EXPECT_EQ(h5::attr_read_string(f.get(), "topology"), "test topology");
    EXPECT_EQ(h5::attr_read_int(f.get(), "world_size"), size());
    h5::file_close(f);
  }
  const RankFileHeader expect{5, rank(), size(), "ddp", "test topology"};
  EXPECT_NO_THROW(checkpoint_file_read(mine, expect, kLock));
  RankFileHeader other = expect;
  other.mode = "balanced";
  try {
    checkpoint_file_read(mine, other, kLock);
    ADD_FAILURE() << "a file whose mode disagrees was read";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("root attribute mode is 'ddp', expected 'balanced'"), std::string::npos)
        << e.what();
  }

  // An older file: the same without the two attributes.
  const fs::path old = dir_ / ("old_" + std::to_string(rank()) + ".h5");
  fs::copy_file(mine, old);
  {
    h5::File f = h5::file_open_rw(old.string(), kLock);
    ASSERT_GE(H5Adelete(f.get(), "mode"), 0);
    ASSERT_GE(H5Adelete(f.get(), "topology"), 0);
    h5::file_close(f);
  }
  std::string why;
  try {
    EXPECT_TRUE(states_equal(checkpoint_file_read(old, expect, kLock), fixture_state(rank(), 5), &why)) << why;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "a file without mode/topology was refused: " << e.what();
  }

  for (const char* reserved : {"mode", "topology"}) {
    CheckpointState st = fixture_state(rank(), 6);
    st.strings[reserved] = "x";
    EXPECT_THROW(checkpoint_state_validate(st), CheckpointError) << reserved;
  }
}

TEST_F(CheckpointTest, BadStateIsAFailedSaveNotAnException) {
  CheckpointState bad = fixture_state(rank(), 1);
  if (rank() == size() - 1) bad.blobs["rng.cpu.more"] = {1, 2};  // "rng.cpu" would be data and a group
  const SaveResult r = checkpoint_save(*env_, request(1), bad);
  EXPECT_EQ(r.status, SaveStatus::failed);
  EXPECT_NE(r.message.find("cannot hold data and also be the group"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("rank " + std::to_string(size() - 1)), std::string::npos) << r.message;
  EXPECT_FALSE(fs::exists(dir_ / "step_00000001"));
  EXPECT_FALSE(fs::exists(dir_ / kLatestName));
}

// A committed step met by a save is not this run's state at that step (it did not verify, or it is of a timeline a
// fallback left, or another run's): it is moved aside intact, and the step is written anew and named by `latest`.
TEST_F(CheckpointTest, CommittedStepMetBySaveIsMovedAsideAndWrittenAgain) {
  ASSERT_TRUE(save(5).ok());
  const std::string before = file_text(dir_ / "step_00000005" / kManifestName);
  barrier();
  CheckpointState other = fixture_state(rank(), 5);
  other.ints["data.cursor"] = -1;
  const SaveResult again = checkpoint_save(*env_, request(5), other);
  ASSERT_TRUE(again.ok()) << again.message;
  EXPECT_EQ(again.step_dir, dir_ / "step_00000005");
  EXPECT_NE(again.message.find("moved aside the step_00000005 committed before"), std::string::npos) << again.message;
  EXPECT_NE(again.message.find("written again"), std::string::npos) << again.message;
  EXPECT_EQ(latest_of(dir_), "step_00000005");
  const std::vector<fs::path> asides = asides_of(dir_, "step_00000005");
  ASSERT_EQ(asides.size(), 1u);
  EXPECT_NE(again.message.find(asides[0].filename().string()), std::string::npos) << again.message;
  EXPECT_EQ(file_text(asides[0] / kManifestName), before);  // the old step, whole
  EXPECT_FALSE(step_from_dir_name(asides[0].filename().string())) << asides[0];
  EXPECT_FALSE(step_from_dir_name("step_00000005.replaced-20250101T000000Z-2"));
  EXPECT_EQ(committed_steps(dir_), (std::vector<long>{5}));
  if (rank() == 0) {
    EXPECT_TRUE(checkpoint_verify(dir_, kLock).ok());
    EXPECT_TRUE(checkpoint_verify(asides[0], kLock).ok());  // still a checkpoint, loadable by its path
  }
  const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
  ASSERT_TRUE(lc);
  EXPECT_EQ(lc->step_dir, dir_ / "step_00000005");
  std::string why;
  EXPECT_TRUE(states_equal(lc->state, other, &why)) << why;

  // Once more (possibly within the same second: the aside name then takes a suffix): nothing is lost either.
  barrier();
  ASSERT_TRUE(save(5).ok());
  barrier();
  EXPECT_EQ(asides_of(dir_, "step_00000005").size(), 2u);
  EXPECT_EQ(checkpoint_resume(*env_, "auto", dir_, kLock)->state.ints.at("data.cursor"), 1000 + rank());
}

// A run that fell back to step 5 (a damaged step 10, or `latest` left on 5 by a crash between the renames) and saves
// step 5: step 10 belongs to the abandoned timeline and is moved aside once `latest` names 5, so `latest` is the
// newest committed step; keep-last-N counts only the steps below 5.
TEST_F(CheckpointTest, NewerCommittedStepsAreMovedAsideAndNotCountedByPrune) {
  for (long s : {1, 3, 5, 10}) ASSERT_TRUE(save(s).ok());
  barrier();
  CheckpointState other = fixture_state(rank(), 5);
  other.ints["data.cursor"] = -5;
  const SaveResult r = checkpoint_save(*env_, request(5, 2), other);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(latest_of(dir_), "step_00000005");
  EXPECT_NE(r.message.find("moved aside the step_00000005 committed before"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("newer than step_00000005"), std::string::npos) << r.message;
  ASSERT_EQ(asides_of(dir_, "step_00000010").size(), 1u);
  EXPECT_NE(r.message.find(asides_of(dir_, "step_00000010")[0].filename().string()), std::string::npos) << r.message;
  EXPECT_TRUE(fs::exists(asides_of(dir_, "step_00000010")[0] / kManifestName));
  // keep 2: step 5 and the next lower committed step, 3; step 10 was not counted as kept.
  EXPECT_EQ(r.pruned, (std::vector<long>{1}));
  EXPECT_EQ(committed_steps(dir_), (std::vector<long>{3, 5}));
  const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
  ASSERT_TRUE(lc);
  EXPECT_EQ(lc->manifest.step, 5);
  EXPECT_EQ(lc->state.ints.at("data.cursor"), -5);

  // `latest` behind a newer committed step, as a crash between the manifest's and `latest`'s renames leaves it: the
  // next save of that newer step moves it aside and `latest` ends on it.
  barrier();
  ASSERT_TRUE(save(8, 2).ok());
  barrier();
  if (rank() == 0) write_text(dir_ / kLatestName, "step_00000005\n");
  barrier();
  EXPECT_EQ(checkpoint_resume(*env_, "auto", dir_, kLock)->manifest.step, 5);
  barrier();
  const SaveResult again = save(8, 2);
  ASSERT_TRUE(again.ok()) << again.message;
  EXPECT_EQ(latest_of(dir_), "step_00000008");
  EXPECT_EQ(asides_of(dir_, "step_00000008").size(), 1u);
  EXPECT_EQ(committed_steps(dir_), (std::vector<long>{5, 8}));
  EXPECT_EQ(asides_of(dir_, "step_00000010").size(), 1u);  // prune never touches an aside directory
  EXPECT_EQ(checkpoint_resume(*env_, "auto", dir_, kLock)->manifest.step, 8);
}

// A save that fails after moving a committed step aside puts it back: a failed save leaves every committed step.
TEST_F(CheckpointTest, FailedSaveOverACommittedStepPutsItBack) {
  ASSERT_TRUE(save(5).ok());
  const std::string before = file_text(dir_ / "step_00000005" / kManifestName);
  barrier();
  SaveRequest req = request(5);
  req.fault_hook = [&](SavePhase p) {
    if (p == SavePhase::rank_file_synced && rank() == size() - 1) throw std::runtime_error("injected");
  };
  const SaveResult r = checkpoint_save(*env_, req, fixture_state(rank(), 5));
  EXPECT_EQ(r.status, SaveStatus::failed);
  EXPECT_EQ(file_text(dir_ / "step_00000005" / kManifestName), before);
  EXPECT_TRUE(asides_of(dir_, "step_00000005").empty());
  EXPECT_EQ(latest_of(dir_), "step_00000005");
  barrier();
  if (rank() == 0) EXPECT_TRUE(checkpoint_verify(dir_, kLock).ok());
}

TEST_F(CheckpointTest, KeepLastNNeverDeletesLatest) {
  auto committed = [&] {
    std::vector<long> steps;
    for (const auto& e : fs::directory_iterator(dir_))
      if (auto s = step_from_dir_name(e.path().filename().string())) {
        EXPECT_TRUE(fs::exists(e.path() / kManifestName)) << e.path();
        steps.push_back(*s);
      }
    std::sort(steps.begin(), steps.end());
    return steps;
  };
  for (long s = 1; s <= 5; ++s) ASSERT_TRUE(save(s * 10, 2).ok());
  barrier();
  EXPECT_EQ(committed(), (std::vector<long>{40, 50}));
  barrier();
  // A run resumed from an older step: `latest` moves back to 45, which must survive. 50 is of the abandoned timeline:
  // moved aside, not counted, so 40 is the other kept step.
  if (rank() == 0) fs::create_directories(dir_ / "step_00000003");  // leftover of an interrupted save
  barrier();
  const SaveResult r = save(45, 2);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.pruned, (std::vector<long>{3}));
  EXPECT_EQ(latest_of(dir_), "step_00000045");
  EXPECT_EQ(committed(), (std::vector<long>{40, 45}));
  EXPECT_EQ(asides_of(dir_, "step_00000050").size(), 1u);
  barrier();  // else rank 0 may create step 46 while another rank still lists the directory
  ASSERT_TRUE(save(46, 1).ok());
  EXPECT_EQ(committed(), (std::vector<long>{46}));
  EXPECT_EQ(checkpoint_resume(*env_, "auto", dir_, kLock)->manifest.step, 46);
}

TEST_F(CheckpointTest, FailureAtEveryPhaseKeepsLatestGood) {
  ASSERT_TRUE(save(1).ok());
  long good = 1;
  long step = 100;
  for (SavePhase phase : kAllSavePhases) {
    ++step;
    const std::string name = save_phase_name(phase);
    const bool per_rank = phase <= SavePhase::before_agree;
    const int target = per_rank ? size() - 1 : 0;
    SaveRequest req = request(step);
    req.fault_hook = [&](SavePhase p) {
      if (p == phase && rank() == target) throw std::runtime_error("injected I/O error at " + name);
    };
    const SaveResult r = checkpoint_save(*env_, req, fixture_state(rank(), step));
    if (phase >= SavePhase::latest_renamed) {
      // `latest` already moved: the step is committed, the failure is a warning.
      EXPECT_EQ(r.status, SaveStatus::committed) << name;
      EXPECT_NE(r.message.find("committed, but"), std::string::npos) << name << ": " << r.message;
      good = step;
    } else {
      EXPECT_EQ(r.status, SaveStatus::failed) << name;
      EXPECT_NE(r.message.find("injected I/O error at " + name), std::string::npos) << r.message;
      EXPECT_NE(r.message.find("rank " + std::to_string(target)), std::string::npos) << r.message;
      EXPECT_FALSE(fs::exists(r.step_dir)) << name << ": the failed step was not cleaned up";
    }
    EXPECT_EQ(latest_of(dir_), step_dir_name(good)) << name;
    barrier();
    if (rank() == 0) EXPECT_TRUE(checkpoint_verify(dir_, kLock).ok()) << name;
    const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
    ASSERT_TRUE(lc) << name;
    EXPECT_EQ(lc->manifest.step, good) << name;
    std::string why;
    EXPECT_TRUE(states_equal(lc->state, fixture_state(rank(), good), &why)) << name << ": " << why;
  }
  ASSERT_TRUE(save(999).ok());
}

TEST_F(CheckpointTest, CrashAtEveryPhaseKeepsLatestGood) {
  if (size() != 1) GTEST_SKIP() << "a crashed rank leaves its peers in a collective; the launcher would kill them";
  ASSERT_TRUE(save(1).ok());
  long good = 1;
  long step = 100;
  for (SavePhase phase : kAllSavePhases) {
    ++step;
    const std::string name = save_phase_name(phase);
    SaveRequest req = request(step);
    req.fault_hook = [&](SavePhase p) {
      if (p == phase) throw CheckpointCrash{p};
    };
    EXPECT_THROW(checkpoint_save(*env_, req, fixture_state(0, step)), CheckpointCrash) << name;
    if (phase >= SavePhase::latest_renamed) good = step;
    EXPECT_EQ(latest_of(dir_), step_dir_name(good)) << name;
    const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
    ASSERT_TRUE(lc) << name;
    EXPECT_EQ(lc->manifest.step, good) << name;
    std::string why;
    EXPECT_TRUE(states_equal(lc->state, fixture_state(0, good), &why)) << name << ": " << why;
    // Saving the same step again commits it; a step the crashed save had committed (manifest renamed) is moved aside
    // first.
    const SaveResult again = save(step);
    const bool was_committed = phase >= SavePhase::manifest_renamed;
    EXPECT_EQ(again.status, SaveStatus::committed) << name << again.message;
    EXPECT_EQ(again.message.find("moved aside the " + step_dir_name(step)) != std::string::npos, was_committed)
        << name << ": " << again.message;
    EXPECT_EQ(asides_of(dir_, step_dir_name(step)).size(), was_committed ? 1u : 0u) << name;
    EXPECT_EQ(latest_of(dir_), step_dir_name(step)) << name;
    good = step;
    for (const auto& e : fs::directory_iterator(dir_))  // temp files of `latest` are cleared by the next save
      if (again.ok()) EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    for (const auto& e : fs::directory_iterator(dir_ / step_dir_name(step)))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }
}

TEST_F(CheckpointTest, RandomCorruptionsAreCaughtBeforeAnyTensorIsUsed) {
  ASSERT_TRUE(save(10).ok());
  ASSERT_TRUE(save(20).ok());
  barrier();  // rank 0 writes the manifest and `latest` after the others have returned from the save
  const fs::path victim = dir_ / "step_00000020";
  std::vector<std::string> files = {kManifestName};
  for (int r = 0; r < size(); ++r) files.push_back(rank_file_name(r));
  std::map<std::string, std::string> pristine;
  for (const auto& f : files) pristine[f] = file_text(victim / f);
  const std::string pristine_latest = file_text(dir_ / kLatestName);
  barrier();  // every rank holds the pristine bytes before rank 0 damages the first file

  std::mt19937_64 gen(20250101);
  const int iterations = size() == 1 ? 300 : 150;
  int caught = 0, harmless = 0, fallbacks = 0;
  for (int it = 0; it < iterations; ++it) {
    // Rank 0 damages one file; the kind, file and place come from one seeded generator (same on every rank).
    const int kind = static_cast<int>(gen() % 4);  // 0 flip, 1 flip several, 2 truncate, 3 delete
    const std::string file = files[gen() % files.size()];
    const std::string& orig = pristine[file];
    std::string bad = orig;
    if (kind == 0 || kind == 1) {
      const int flips = kind == 0 ? 1 : 2 + static_cast<int>(gen() % 8);
      for (int k = 0; k < flips; ++k) bad[gen() % bad.size()] ^= static_cast<char>(1 + gen() % 255);
    } else if (kind == 2) {
      bad.resize(gen() % orig.size());
    }
    const std::string what = "iteration " + std::to_string(it) + ": " +
                             (kind <= 1   ? "flipped bytes in "
                              : kind == 2 ? "truncated "
                                          : "deleted ") +
                             file;
    if (rank() == 0) {
      if (kind == 3) fs::remove(victim / file);
      else write_text(victim / file, bad);
    }
    barrier();

    bool loaded = false;
    try {
      checkpoint_load(*env_, victim, kLock);
      loaded = true;
    } catch (const AgreedError& e) {
      ++caught;
      const std::string msg = e.what();
      EXPECT_EQ(e.code(), ExitCode::checkpoint) << what;
      EXPECT_NE(msg.find(file), std::string::npos) << what << ": " << msg;
      EXPECT_NE(msg.find("rank "), std::string::npos) << what << ": " << msg;
      if (file != kManifestName) {
        const std::string file_rank = "(rank " + std::to_string(std::stoi(file.substr(5, 5))) + ")";
        EXPECT_NE(msg.find(file_rank), std::string::npos) << what << ": " << msg;
      }
    }
    if (loaded) {
      // Only a whitespace change in the manifest may pass: the same manifest once parsed.
      ++harmless;
      EXPECT_EQ(file, kManifestName) << what;
      EXPECT_EQ(manifest_to_json(manifest_from_json(bad, "x")), orig) << what;
    }
    if (rank() == 0) {
      const VerifyReport v = checkpoint_verify(victim, kLock);
      EXPECT_EQ(v.ok(), loaded) << what;
      if (!v.ok()) EXPECT_NE(v.problems.front().find(file), std::string::npos) << what << ": " << v.problems.front();
    }
    if (it % 10 == 0 && !loaded) {
      const auto lc = checkpoint_resume(*env_, "auto", dir_, kLock);
      ASSERT_TRUE(lc) << what;
      EXPECT_EQ(lc->manifest.step, 10) << what;
      std::string why;
      EXPECT_TRUE(states_equal(lc->state, fixture_state(rank(), 10), &why)) << what << ": " << why;
      ++fallbacks;
    }
    barrier();
    if (rank() == 0) write_text(victim / file, orig);
    barrier();
  }
  EXPECT_GT(caught, iterations * 9 / 10);
  EXPECT_GT(fallbacks, 0);
  if (rank() == 0) std::printf("corruptions: %d caught, %d harmless whitespace\n", caught, harmless);

  // A damaged `latest`: auto falls back to the newest step that verifies; an explicit root is an error.
  if (rank() == 0) write_text(dir_ / kLatestName, "step_0000002\x01\n");
  barrier();
  EXPECT_EQ(checkpoint_resume(*env_, "auto", dir_, kLock)->manifest.step, 20);
  try {
    checkpoint_load(*env_, dir_, kLock);
    ADD_FAILURE() << "a damaged `latest` was followed";
  } catch (const AgreedError& e) {
    EXPECT_NE(std::string(e.what()).find("latest"), std::string::npos) << e.what();
  }
  barrier();
  if (rank() == 0) write_text(dir_ / kLatestName, pristine_latest);
  barrier();
}

TEST_F(CheckpointTest, ResumeAutoEdgeCases) {
  // Nothing there yet: a fresh start.
  EXPECT_FALSE(checkpoint_resume(*env_, "auto", dir_, kLock));
  // An explicit path that does not exist: an error naming it.
  try {
    checkpoint_resume(*env_, (dir_ / "step_00000077").string(), dir_, kLock);
    ADD_FAILURE();
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::checkpoint);
    EXPECT_NE(std::string(e.what()).find("step_00000077"), std::string::npos) << e.what();
  }
  // Committed steps that all fail to verify: auto refuses rather than silently starting over.
  ASSERT_TRUE(save(7).ok());
  if (rank() == 0) write_text(dir_ / "step_00000007" / rank_file_name(0), "garbage");
  barrier();
  try {
    checkpoint_resume(*env_, "auto", dir_, kLock);
    ADD_FAILURE();
  } catch (const AgreedError& e) {
    EXPECT_EQ(e.code(), ExitCode::checkpoint);
    EXPECT_NE(std::string(e.what()).find("none of the 1 committed"), std::string::npos) << e.what();
  }
}
