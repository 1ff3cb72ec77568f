// The report of a run out of device memory (train/out_of_memory.h): rank, step, the allocator's first two sentences
// (its paragraph on allocator settings dropped) and the plan's footprint; exit 7; the hint lists the smaller variants
// of the run with their planned footprints, as `ranktune plan` computes them. The TinyLlama-1.1B full fine-tune of
// the benchmarks (4 x 2048 tokens on a GPU): planned 27.2 GiB (measured 27.29, tests/plan/test_loss_plan.cpp).
#include <gtest/gtest.h>

#include <string>

#include "ranktune/core/config.h"
#include "ranktune/train/out_of_memory.h"
#include "support/model_shapes.h"

namespace ranktune {
namespace {

const char* kTorchText =
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.06 GiB is "
    "free. Including non-PyTorch memory, this process has 78.12 GiB memory in use. If reserved but unallocated memory "
    "is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\nException raised "
    "from malloc at c10/cuda/CUDACachingAllocator.cpp:1337";

TEST(OutOfMemory, NamesRankStepAllocatorAndPlan) {
  Config cfg;
  cfg.train.micro_batch = 4;
  cfg.train.seq_len = 2048;
  const OutOfMemoryError e = out_of_memory_error(kTorchText, 3, 17, cfg, test::tinyllama(), true);
  EXPECT_EQ(e.code(), ExitCode::out_of_memory);
  EXPECT_EQ(std::string(e.what()),
            "rank 3 ran out of device memory in step 17 (CUDA out of memory. Tried to allocate 2.00 GiB.); the plan "
            "for this run is 27.2 GiB on one device");
  const std::string hint = e.hint();
  for (const char* way : {"LoRA: --lora.r=16 (10.9 GiB)", "QLoRA: --model.quantize=nf4 --lora.r=16 (9.6 GiB)",
                          "--train.activation_checkpointing=true (18.2 GiB)",
                          "--train.micro_batch=2 (and more --train.grad_accum) (22.2 GiB)"})
    EXPECT_NE(hint.find(way), std::string::npos) << way << " not in: " << hint;
  EXPECT_EQ(hint.find("mlp_chunk_tokens"), std::string::npos) << "2048 tokens: the tiled MLP is not offered";
  EXPECT_NE(hint.find("`ranktune plan` with the same options"), std::string::npos);
}

// Only variants that plan smaller are offered; a long sequence gets the tiled MLP.
TEST(OutOfMemory, OffersOnlySmallerVariants) {
  Config cfg;
  cfg.lora.r = 16;
  cfg.model.quantize = "nf4";
  cfg.train.activation_checkpointing = true;
  cfg.train.micro_batch = 1;
  cfg.train.seq_len = 344064;
  const OutOfMemoryError e = out_of_memory_error("CUDA out of memory.", 0, 1, cfg, test::llama3_8b(), true);
  EXPECT_NE(std::string(e.what()).find("(CUDA out of memory.)"), std::string::npos) << e.what();
  EXPECT_EQ(e.hint().rfind("any of: --train.mlp_chunk_tokens=8192 (", 0), 0u) << e.hint();
  EXPECT_EQ(e.hint().find("LoRA:"), std::string::npos) << e.hint();
}

}  // namespace
}  // namespace ranktune
