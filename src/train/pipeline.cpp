#include "ranktune/train/pipeline.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/autograd.h>

#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "ranktune/core/error.h"
#include "ranktune/model/attention.h"
#include "ranktune/model/linear_cross_entropy.h"
#include "ranktune/train/pipeline_schedule.h"
#include "ranktune/train/token_data.h"

namespace ranktune {

// Busy time of one stage: pairs of timing events around each action on the device's current stream (GPU), or the
// wall clock around it (CPU, where the host is the device).
struct PipelineExecutor::Timer {
  at::Device device;
  std::vector<std::pair<c10::Event, c10::Event>> spans;
  double cpu_seconds = 0;
  std::chrono::steady_clock::time_point cpu_start;

  explicit Timer(at::Device d) : device(d) {}
  c10::Stream stream() const { return c10::impl::getDeviceGuardImpl(device.type())->getStream(device); }
  void start() {
    if (device.is_cpu()) {
      cpu_start = std::chrono::steady_clock::now();
      return;
    }
    spans.emplace_back(c10::Event(device.type(), c10::EventFlag::BACKEND_DEFAULT),
                       c10::Event(device.type(), c10::EventFlag::BACKEND_DEFAULT));
    spans.back().first.record(stream());
  }
  void stop() {
    if (device.is_cpu()) {
      cpu_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - cpu_start).count();
      return;
    }
    spans.back().second.record(stream());
  }
  double take() {
    double s = cpu_seconds;
    for (auto& [a, b] : spans) {
      b.synchronize();
      s += a.elapsedTime(b) / 1000.0;
    }
    spans.clear();
    cpu_seconds = 0;
    return s;
  }
};

namespace {

c10::Stream current_stream(at::Device d) { return c10::impl::getDeviceGuardImpl(d.type())->getStream(d); }

// Marks the point on a GPU stage's current stream up to which a hand-off's work is queued (nothing on CPU).
void record_ready(std::optional<c10::Event>& slot, at::Device d) {
  if (!d.is_cuda()) return;
  slot.emplace(d.type());
  slot->record(current_stream(d));
}

}  // namespace

// ATen copies between two GPUs on the source device's current stream after a two-way barrier with the destination's
// current stream. Issued from the compute streams, that barrier makes the producing GPU wait for everything already
// queued on the consuming GPU: each stage would wait for the next, and the pipeline would run one GPU at a time
// (measured: m = 4, 8, 16 no faster than m = 1 on two H200s). So a hop runs on a side stream of the source device:
// the side stream waits for the producer (an event) and takes the barrier instead, the destination's compute stream
// waits for the copy, and the source's compute stream goes straight on to the next chunk. ATen enables peer access
// between the two GPUs where the hardware allows it. CPU and same-device hops are plain (no-op) copies.
// `ready`, when given, was recorded by the producer right after it queued t's work: with a host thread per stage the
// producer may already have queued its next chunk by the time the consumer gets here, and an event recorded now
// would make the hop wait for that chunk too.
at::Tensor PipelineExecutor::hop(const at::Tensor& t, at::Device to, const std::optional<c10::Event>& ready) {
  const at::Device from = t.device();
  const c10::Stream* side_ptr = from == to || !from.is_cuda() || !to.is_cuda() ? nullptr : side_stream(from);
  if (!side_ptr) return t.to(to);
  const c10::Stream side = *side_ptr;
  if (ready) {
    ready->block(side);
  } else {
    c10::Event produced(from.type());
    produced.record(current_stream(from));
    produced.block(side);
  }
  at::Tensor out;
  {
    c10::StreamGuard on_side(side);
    out = t.to(to, /*non_blocking=*/true);
  }
  t.record_stream(side);  // the allocator must not hand t's memory out again before the side stream has read it
  return out;
}

const c10::Stream* PipelineExecutor::side_stream(at::Device d) const {
  for (const auto& [device, stream] : side_streams_)
    if (device == d) return &stream;
  return nullptr;  // not a stage's GPU (the batch may arrive on another): a plain copy
}

StageThreads stage_threads_from(const std::string& value) {
  if (value == "on") return StageThreads::on;
  if (value == "off") return StageThreads::off;
  if (value == "auto") return StageThreads::automatic;
  throw ConfigError("parallel.stage_threads must be auto, on or off, got '" + value + "'");
}

std::vector<StageRange> stages_from_plan(const BalancedPlan& plan, const std::vector<at::Device>& devices) {
  if (devices.size() != plan.stages.size())
    throw Error(ExitCode::internal, "balanced plan has " + std::to_string(plan.stages.size()) + " stages for " +
                                        std::to_string(devices.size()) + " devices");
  std::vector<StageRange> out;
  for (std::size_t i = 0; i < plan.stages.size(); ++i)
    if (!plan.stages[i].empty()) out.push_back({devices[i], plan.stages[i].first, plan.stages[i].last});
  return out;
}

void place_stages(LlamaImpl& model, const std::vector<StageRange>& stages) {
  const int layers = static_cast<int>(model.num_layers());
  int expect = 0;
  for (const auto& st : stages) {
    if (st.first_unit != expect || st.last_unit < st.first_unit)
      throw Error(ExitCode::internal, "balanced stages are not contiguous at unit " + std::to_string(expect));
    expect = st.last_unit + 1;
    for (int u = st.first_unit; u <= st.last_unit; ++u) {
      if (u == 0) model.model->embed_tokens->to(st.device);
      else if (u <= layers) model.block(u - 1)->to(st.device);
      else {
        model.model->norm->to(st.device);
        if (model.lm_head) model.lm_head->to(st.device);
      }
    }
  }
  if (expect != layers + 2)
    throw Error(ExitCode::internal,
                "balanced stages cover " + std::to_string(expect) + " of " + std::to_string(layers + 2) + " units");
}

PipelineExecutor::PipelineExecutor(LlamaImpl& model, std::vector<StageRange> stages, int chunks, StageThreads threads)
    : model_(model), stages_(std::move(stages)), chunks_(chunks) {
  if (stages_.empty()) throw Error(ExitCode::internal, "balanced execution without stages");
  if (chunks_ < 1) throw ConfigError("parallel.micro_batches must be >= 1, got " + std::to_string(chunks_));
  std::vector<at::Device> gpus;
  for (const auto& st : stages_) {
    timers_.push_back(std::make_unique<Timer>(st.device));
    if (st.device.is_cuda() && std::find(gpus.begin(), gpus.end(), st.device) == gpus.end()) {
      gpus.push_back(st.device);
      side_streams_.emplace_back(st.device,
                                 c10::impl::getDeviceGuardImpl(st.device.type())->getStreamFromGlobalPool(st.device));
    }
  }
  threaded_ = threads == StageThreads::on || (threads == StageThreads::automatic && gpus.size() > 1);
}

PipelineExecutor::~PipelineExecutor() = default;

// One micro-step's state, shared by the stages (and their threads).
// inputs[s][c]: what stage s received for chunk c (a leaf on its device; the gradient handed back comes from it).
// outputs[s][c]: what it produced (for the last stage: the scaled loss). done[s][c]: how far stage s is with chunk c
// (0 nothing, 1 forward issued, 2 backward issued); a stage's thread waits on it for its neighbour's hand-off.
struct PipelineExecutor::Step {
  std::vector<at::Tensor> tokens, targets;
  std::vector<std::vector<at::Tensor>> positions, documents, inputs, outputs;  // documents: empty = no mask
  // GPU stages: recorded on the stage's stream right after it queued chunk c's forward (the activation it hands on)
  // or backward (the gradient of its input), before it marks the chunk done.
  std::vector<std::vector<std::optional<c10::Event>>> forwarded, backwarded;
  std::vector<at::Tensor> losses;
  double scale = 1;
  std::vector<std::vector<int>> done;
  std::mutex mutex;
  std::condition_variable changed;
  bool failed = false;

  void mark(int stage, int chunk, int level) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      done[stage][chunk] = level;
    }
    changed.notify_all();
  }
  // False when another stage failed: stop without waiting for a hand-off that will never come.
  bool wait_for(int stage, int chunk, int level) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return failed || done[stage][chunk] >= level; });
    return !failed;
  }
  void fail() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      failed = true;
    }
    changed.notify_all();
  }
};

at::Tensor PipelineExecutor::forward_backward(const BatchTensors& batch, double scale) {
  const int S = static_cast<int>(stages_.size());
  const std::int64_t b = batch.tokens.size(0);
  if (chunks_ > b)
    throw ConfigError("parallel.micro_batches=" + std::to_string(chunks_) + " splits a micro-batch of " +
                          std::to_string(b) + " sequences",
                      "set parallel.micro_batches <= train.micro_batch (each pipeline chunk needs a sequence)");
  Step step;
  // Each stage's inputs moved once per micro-step, before any of its compute is queued: tokens to the first stage,
  // targets to the last, positions to every stage (the document index, when the batch has one, stays on the host:
  // each stage's mask is made from it there and copied over).
  step.tokens = hop(batch.tokens, stages_.front().device).tensor_split(chunks_);
  step.targets = hop(batch.targets, stages_.back().device).tensor_split(chunks_);
  for (const auto& st : stages_) {
    step.positions.push_back(hop(batch.positions, st.device).tensor_split(chunks_));
    if (batch.documents.defined())
      step.documents.push_back(
          (batch.documents.is_cpu() ? batch.documents : hop(batch.documents, st.device)).tensor_split(chunks_));
  }
  step.inputs.assign(S, std::vector<at::Tensor>(chunks_));
  step.outputs.assign(S, std::vector<at::Tensor>(chunks_));
  step.losses.resize(chunks_);
  step.done.assign(S, std::vector<int>(chunks_, 0));
  step.forwarded.resize(S);
  step.backwarded.resize(S);
  for (int s = 0; s < S; ++s) {
    step.forwarded[s].resize(chunks_);
    step.backwarded[s].resize(chunks_);
  }
  step.scale = scale;

  const std::vector<PipeAction> schedule = gpipe_schedule(S, chunks_);
  if (!threaded_ || S == 1) {
    for (const PipeAction& a : schedule) run_action(a, step);
  } else {
    // One host thread per stage, each taking its stage's actions in schedule order and waiting only for the hand-offs
    // it needs: one thread issuing every GPU's kernels cannot keep more than one GPU busy once launching a chunk
    // costs the host about as long as the chunk runs on its GPU.
    const at::ThreadLocalState caller;  // grad mode and the like, as in the calling thread
    std::vector<std::exception_ptr> errors(S);
    std::vector<std::thread> threads;
    for (int s = 0; s < S; ++s)
      threads.emplace_back([&, s] {
        at::ThreadLocalStateGuard same_state(caller);
        try {
          for (const PipeAction& a : schedule)
            if (a.stage == s && !run_action(a, step)) return;
        } catch (...) {
          errors[s] = std::current_exception();
          step.fail();
        }
      });
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  at::Tensor total = step.losses[0].detach();
  for (int c = 1; c < chunks_; ++c) total = total + step.losses[c].detach();
  return total;
}

bool PipelineExecutor::run_action(const PipeAction& a, Step& step) {
  const int S = static_cast<int>(stages_.size());
  const int layers = static_cast<int>(model_.num_layers());
  const StageRange& st = stages_[a.stage];
  Timer& timer = *timers_[a.stage];
  const int c = a.chunk;
  if (a.kind == PipeAction::forward) {
    at::Tensor h;
    if (a.stage > 0) {  // the hop: copy the predecessor's activation, cut the graph, keep a leaf for its gradient
      if (!step.wait_for(a.stage - 1, c, 1)) return false;
      h = hop(step.outputs[a.stage - 1][c], st.device, step.forwarded[a.stage - 1][c]).detach().requires_grad_(true);
      step.inputs[a.stage][c] = h;
    }
    timer.start();
    RopeCache rope;
    at::Tensor mask;
    if (st.last_unit >= 1 && st.first_unit <= layers) {
      rope = model_.rope(step.positions[a.stage][c], model_.model->norm->weight.scalar_type());
      if (!step.documents.empty()) {
        mask = attention_mask(step.documents[a.stage][c], st.device, model_.model->norm->weight.scalar_type(),
                              model_.config().head_dim, model_.flash_varlen());
      }
    }
    for (int u = st.first_unit; u <= st.last_unit; ++u) {
      if (u == 0) h = model_.embed(step.tokens[c]);
      else if (u <= layers) h = model_.run_block(u - 1, h, rope, mask);
      else h = head_loss_sum(model_, h, step.targets[c]);  // the head unit ends the last stage: head and loss as one
    }
    if (a.stage == S - 1) {
      step.losses[c] = h;
      h = step.losses[c] * step.scale;
    }
    step.outputs[a.stage][c] = h;
    timer.stop();
    record_ready(step.forwarded[a.stage][c], st.device);
    step.mark(a.stage, c, 1);
    return true;
  }
  at::Tensor grad;
  at::Tensor& out = step.outputs[a.stage][c];
  if (a.stage < S - 1) {
    if (!step.wait_for(a.stage + 1, c, 2)) return false;
    grad = step.inputs[a.stage + 1][c].grad();
    step.inputs[a.stage + 1][c] = at::Tensor();  // the successor is done with this chunk
    if (grad.defined() && out.requires_grad()) grad = hop(grad, st.device, step.backwarded[a.stage + 1][c]);
  }
  const bool upstream = out.requires_grad() && (a.stage == S - 1 || grad.defined());
  if (upstream) {  // else nothing trainable upstream of this boundary
    timer.start();
    torch::autograd::backward({out},
                              grad.defined() ? torch::autograd::variable_list{grad} : torch::autograd::variable_list{});
    timer.stop();
  }
  out = at::Tensor();  // frees this chunk's activations on this stage
  if (a.stage > 0) record_ready(step.backwarded[a.stage][c], st.device);
  step.mark(a.stage, c, 2);
  return true;
}

std::vector<double> PipelineExecutor::take_busy_seconds() {
  std::vector<double> out;
  for (auto& t : timers_) out.push_back(t->take());
  return out;
}

std::string PipelineExecutor::describe() const {
  const int layers = static_cast<int>(model_.num_layers());
  auto unit = [&](int u) {
    return u == 0 ? std::string("embed") : u <= layers ? "layer " + std::to_string(u - 1) : "head";
  };
  std::ostringstream os;
  os << "balanced: " << stages_.size() << " stage(s), "
     << (chunks_ == 1 ? std::string("sequential (one stage busy at a time)")
                      : "GPipe with " + std::to_string(chunks_) + " micro-batches per micro-step")
     << (model_.activation_checkpointing() ? ", activation checkpointing" : "")
     << (model_.activation_checkpointing() && model_.activation_checkpointed_layers() < layers
             ? " of " + std::to_string(model_.activation_checkpointed_layers()) + " layers"
             : "")
     << (threaded_ ? ", one host thread per stage" : "") << ":";
  for (std::size_t s = 0; s < stages_.size(); ++s)
    os << (s ? ";" : "") << " [" << stages_[s].device.str() << "] " << unit(stages_[s].first_unit)
       << (stages_[s].last_unit > stages_[s].first_unit ? " .. " + unit(stages_[s].last_unit) : "");
  return os.str();
}

std::string stage_busy_describe(const std::vector<StageRange>& stages, const std::vector<double>& busy_s,
                                double step_seconds) {
  std::string line = "busy time per stage over " + std::to_string(step_seconds).substr(0, 6) + " s of steps:";
  for (std::size_t i = 0; i < busy_s.size(); ++i) {
    char part[96];
    std::snprintf(part, sizeof part, " %zu [%s] %.2f s (%.0f%%)", i, stages.at(i).device.str().c_str(), busy_s[i],
                  100 * busy_s[i] / step_seconds);
    line += part;
  }
  return line;
}

}  // namespace ranktune
