// Balanced execution on the GPU(s): stages on cuda:0 (and cuda:1 .. when there are more), bf16 weights with LoRA
// adapters in fp32, sequential and pipelined (m = 1, 2, 4), issued by one host thread and by a host thread per stage,
// against the unsharded bf16 model on cuda:0, within bf16 tolerance. Skips without CUDA.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "ranktune/train/pipeline.h"
#include "train/pipeline_test_util.h"

namespace ranktune {
namespace {

void check_gpu(bool tied, int lora_r, bool checkpointing) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  const int gpus = static_cast<int>(torch::cuda::device_count());
  const auto dev = [&](int stage) { return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(stage % gpus)); };
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16);
  const BatchTensors bt = test::make_batch(8, 32);
  const double scale = 1.0 / static_cast<double>(bt.loss_tokens);

  Llama ref = test::make_model(tied, lora_r, bf16);
  ref->to(dev(0));
  const double ref_loss = test::reference_step(*ref, bt, scale);
  const auto ref_grads = test::grads_of(*ref);
  for (StageThreads threads : {StageThreads::off, StageThreads::on})
    for (int m : {1, 2, 4}) {
      SCOPED_TRACE("micro_batches " + std::to_string(m) + " over " + std::to_string(gpus) + " GPU(s), " +
                   (threads == StageThreads::on ? "a host thread per stage" : "one host thread"));
      Llama model = test::make_model(tied, lora_r, bf16);
      model->set_activation_checkpointing(checkpointing);
      const std::vector<StageRange> stages{{dev(0), 0, 2}, {dev(1), 3, 5}};
      place_stages(*model, stages);
      PipelineExecutor exec(*model, stages, m, threads);
      const double loss = exec.forward_backward(bt, scale).item<double>();
      EXPECT_NEAR(loss, ref_loss, 1e-2 * std::abs(ref_loss));
      test::expect_same_grads(test::grads_of(*model), ref_grads, 3e-2);
      for (double s : exec.take_busy_seconds()) EXPECT_GT(s, 0.0);
    }
}

TEST(PipelineGpu, FullFineTuneTied) { check_gpu(true, 0, false); }
TEST(PipelineGpu, LoraUntiedCheckpointed) { check_gpu(false, 8, true); }

}  // namespace
}  // namespace ranktune
