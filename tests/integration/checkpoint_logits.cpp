// Test tool of tests/integration/export.sh: the logits ranktune's own model gives for a checkpoint, the model rebuilt
// as the run held it (trained_model_build: base + unmerged adapters, fp32, CPU). check_export.py compares
// transformers/peft on the exported directory with them.
//   checkpoint_logits CHECKPOINT OUT.f32 TOKEN...   writes [tokens, vocab] float32 (native byte order, row-major)
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ranktune/train/export.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s CHECKPOINT OUT.f32 TOKEN...\n", argv[0]);
    return 2;
  }
  try {
    const ranktune::TrainedModel tm = ranktune::trained_model_read(argv[1], ranktune::h5::FileLocking::best_effort);
    ranktune::Llama model = ranktune::trained_model_build(tm);
    std::vector<std::int64_t> ids;
    for (int i = 3; i < argc; ++i) ids.push_back(std::stoll(argv[i]));
    at::NoGradGuard no_grad;
    const at::Tensor logits =
        model->forward(at::tensor(ids, at::kLong).view({1, -1})).squeeze(0).to(at::kFloat).contiguous();
    std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(logits.data_ptr()), static_cast<std::streamsize>(logits.nbytes()));
    if (!out.flush()) throw std::runtime_error(std::string("cannot write ") + argv[2]);
    std::printf("%lld %lld\n", static_cast<long long>(logits.size(0)), static_cast<long long>(logits.size(1)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_logits: %s\n", e.what());
    return 1;
  }
  return 0;
}
