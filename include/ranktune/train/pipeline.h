// defines: StageRange, stages_from_plan, place_stages and PipelineExecutor, balanced mode's execution: one process,
// the model's units (embedding, decoder layers, final norm + lm_head) split into contiguous stages, each stage's
// weights on its device. forward_backward() runs one micro-step through the stages in gpipe_schedule order:
// chunks = 1 is naive sequential execution, chunks = m splits the micro-step's sequences into m pipeline
// micro-batches. Activations cross stages with an explicit copy to the next device (on a side stream, so that the
// producing GPU goes on with the next chunk); each stage's backward starts
// from the gradient its successor produced for the copied input. Gradients of all chunks accumulate in the
// parameters (on their own devices); the optimizer then steps each device's parameters there (AdamW groups by device).
// Knows nothing of MPI: balanced mode runs at world size 1.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ranktune/model/llama.h"
#include "ranktune/plan/balanced_plan.h"

namespace ranktune {

struct BatchTensors;

struct StageRange {
  at::Device device{at::kCPU};
  int first_unit = 0, last_unit = -1;  // units: 0 = embedding, 1..L = layers 0..L-1, L+1 = final norm + lm_head
  bool empty() const { return first_unit > last_unit; }
};

// The plan's stages (empty ones dropped) on the given devices: plan stage i runs on devices[i].
std::vector<StageRange> stages_from_plan(const BalancedPlan& plan, const std::vector<at::Device>& devices);

// Moves every unit's weights (and LoRA adapters) to its stage's device, in place: parameter tensors keep their
// identity, so collect trainable parameters after this call or before, either works.
void place_stages(LlamaImpl& model, const std::vector<StageRange>& stages);

// Who issues each stage's work: one host thread per stage (on) or the caller alone (off). `automatic` gives each
// stage its own thread when the stages span several GPUs (the case where the host's launch rate limits the
// pipeline) and keeps one thread otherwise, which also keeps CPU runs bit-reproducible (a tied embedding would
// otherwise accumulate its two gradients in thread order).
enum class StageThreads { automatic, on, off };
StageThreads stage_threads_from(const std::string& value);  // parallel.stage_threads: "auto", "on" or "off"

// How busy each stage's device was over `step_seconds` of steps (the pipeline's whole point), one line:
// "busy time per stage over 12.345 s of steps: 0 [cuda:0] 10.10 s (82%) 1 [cuda:1] ...". busy_s: per stage, summed.
std::string stage_busy_describe(const std::vector<StageRange>& stages, const std::vector<double>& busy_s,
                                double step_seconds);

struct PipeAction;

class PipelineExecutor {
 public:
  PipelineExecutor(LlamaImpl& model, std::vector<StageRange> stages, int chunks,
                   StageThreads threads = StageThreads::automatic);
  ~PipelineExecutor();

  // Forward and backward of one micro-step (tokens, targets, positions and documents if defined, [b, T] on any
  // device; each stage builds its chunks' document mask from documents). Gradients of
  // scale * (summed token loss) accumulate into the parameters. Returns the summed token loss (fp32 scalar on the
  // last stage's device, not synchronised).
  at::Tensor forward_backward(const BatchTensors& batch, double scale);

  // Seconds each stage's device spent computing since the last call (CUDA events on GPU, wall clock on CPU);
  // synchronises the devices.
  std::vector<double> take_busy_seconds();

  int chunks() const { return chunks_; }
  const std::vector<StageRange>& stages() const { return stages_; }
  std::string describe() const;  // one line for the start-up log

 private:
  struct Timer;
  struct Step;
  bool run_action(const PipeAction& a, Step& step);  // false: another stage failed, stop
  // To another stage's device without stalling the source; `ready`: the producer's event for t, if it recorded one.
  at::Tensor hop(const at::Tensor& t, at::Device to, const std::optional<c10::Event>& ready = std::nullopt);
  const c10::Stream* side_stream(at::Device d) const;  // the copy stream of a stage's GPU (null: not one)
  LlamaImpl& model_;
  std::vector<StageRange> stages_;
  int chunks_;
  std::vector<std::unique_ptr<Timer>> timers_;
  std::vector<std::pair<at::Device, c10::Stream>> side_streams_;  // one per GPU of the stages
  bool threaded_ = false;
};

}  // namespace ranktune
