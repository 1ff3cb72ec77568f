// RNG state in training checkpoints (train_state_capture / train_state_restore) through a real rank file: a CPU run
// saves only the CPU generator; a CUDA run also saves its device's generator, and after a restore at::rand on that
// device draws the same numbers as right after the save. The CUDA cases skip where no GPU is visible.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <filesystem>

#include "ranktune/io/checkpoint_file.h"
#include "ranktune/train/train_checkpoint.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

class RngCheckpoint : public testing::Test {
 protected:
  void SetUp() override {
    params.insert("w", at::zeros({2, 3}).requires_grad_());
    opt = std::make_unique<AdamW>(params, AdamWOptions{});
    record.base_identity = "test base";
    record.config_json = "{}";
  }

  // Captures on `device`, writes the state to a rank file and reads it back, as a save and a resume do.
  LoadedCheckpoint save_and_read(const c10::Device& device, const std::vector<int>& other_gpus = {}) {
    const CheckpointState st = train_state_capture(params, *opt, RunPosition{}, true, record, device, other_gpus);
    const fs::path file = scratch.path() / "rank_00000.h5";
    checkpoint_file_write(file, st, RankFileHeader{}, h5::FileLocking::best_effort);
    LoadedCheckpoint ck;
    ck.step_dir = scratch.path();
    ck.state = checkpoint_file_read(file, RankFileHeader{}, h5::FileLocking::best_effort);
    ck.has_rank_state = true;
    return ck;
  }

  test::ScratchDir scratch{"rng_" + test::test_name()};
  NamedTensors params;
  std::unique_ptr<AdamW> opt;
  ModelRecord record;
};

TEST_F(RngCheckpoint, CpuRunSavesNoCudaStateAndRestoresCpu) {
  at::manual_seed(11);
  const LoadedCheckpoint ck = save_and_read(c10::Device(at::kCPU));
  EXPECT_EQ(ck.state.blobs.count("rng.cpu"), 1u);
  EXPECT_EQ(ck.state.blobs.count("rng.cuda"), 0u);
  const at::Tensor want = at::rand({64});
  at::rand({1000});
  train_state_restore(ck, params, *opt, record.base_identity, false, c10::Device(at::kCPU));
  EXPECT_TRUE(at::equal(at::rand({64}), want));
}

TEST_F(RngCheckpoint, CudaRunRestoresItsDeviceGenerator) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  const c10::Device dev(at::kCUDA, 0);
  at::manual_seed(12);
  at::rand({100}, at::TensorOptions(dev));  // move the generator's offset off its start
  const LoadedCheckpoint ck = save_and_read(dev);
  ASSERT_EQ(ck.state.blobs.count("rng.cuda"), 1u);
  const at::Tensor want = at::rand({4096}, at::TensorOptions(dev)).cpu();
  const at::Tensor want_cpu = at::rand({64});
  at::rand({100000}, at::TensorOptions(dev));  // and further, so a restore that did nothing would differ
  at::rand({1000});
  train_state_restore(ck, params, *opt, record.base_identity, false, dev);
  EXPECT_TRUE(at::equal(at::rand({4096}, at::TensorOptions(dev)).cpu(), want));
  EXPECT_TRUE(at::equal(at::rand({64}), want_cpu));
}

// Balanced mode over two GPUs: the second stage's generator is saved and restored as well.
TEST_F(RngCheckpoint, BalancedRunRestoresEveryStageGenerator) {
  if (!at::hasCUDA() || torch::cuda::device_count() < 2) GTEST_SKIP() << "needs 2 GPUs";
  const c10::Device dev0(at::kCUDA, 0), dev1(at::kCUDA, 1);
  at::manual_seed(14);
  const LoadedCheckpoint ck = save_and_read(dev0, {1});
  ASSERT_EQ(ck.state.blobs.count("rng.cuda_gpu1"), 1u);
  const at::Tensor want = at::rand({4096}, at::TensorOptions(dev1)).cpu();
  at::rand({100000}, at::TensorOptions(dev1));
  train_state_restore(ck, params, *opt, record.base_identity, false, dev0, {1});
  EXPECT_TRUE(at::equal(at::rand({4096}, at::TensorOptions(dev1)).cpu(), want));
}

TEST_F(RngCheckpoint, CudaCheckpointResumesOnCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible";
  at::manual_seed(13);
  const LoadedCheckpoint ck = save_and_read(c10::Device(at::kCUDA, 0));
  const at::Tensor want_cpu = at::rand({64});
  at::rand({1000});
  EXPECT_NO_THROW(train_state_restore(ck, params, *opt, record.base_identity, false, c10::Device(at::kCPU)));
  EXPECT_TRUE(at::equal(at::rand({64}), want_cpu));
}

}  // namespace
}  // namespace ranktune
