// defines: out_of_memory_error, what a training run says when its device runs out of memory mid-step (LibTorch's
// allocator throws c10::OutOfMemoryError; the trainer turns it into this): one line naming the rank, the step, the
// allocator's own first sentence and the plan's footprint for the run, exit 7 (out of device memory), and the hint
// every smaller variant of the run with its planned footprint (plan_variants), so the fix is in the message rather
// than in a search for the allocator's text.
#pragma once

#include <string>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

// `allocator_message`: the exception's text (its first sentence is kept); `on_gpu`: the run's device is a GPU.
OutOfMemoryError out_of_memory_error(const std::string& allocator_message, int rank, long step, const Config& cfg,
                                     const LlamaConfig& model, bool on_gpu);

}  // namespace ranktune
