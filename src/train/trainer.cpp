// The loop. Loss bookkeeping: each micro-batch's loss is summed over its target tokens and scaled by
// world_size / (target tokens of the whole global batch), so that DDP's average over ranks yields exactly the
// gradient of the mean token loss of the global batch, equal to one process training on all of it.
#include "ranktune/train/trainer.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <optional>
#include <sstream>

#ifdef RANKTUNE_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/data/sampler.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/grad_sync.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/signals.h"
#include "ranktune/io/checkpoint_async.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/io/h5.h"
#include "ranktune/model/linear_cross_entropy.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/quantize.h"
#include "ranktune/train/batch_plan.h"
#include "ranktune/train/fault_hook.h"
#include "ranktune/train/flops.h"
#include "ranktune/train/generate.h"
#include "ranktune/train/grads.h"
#include "ranktune/train/lr_schedule.h"
#include "ranktune/train/metrics.h"
#include "ranktune/train/optimizer.h"
#include "ranktune/train/out_of_memory.h"
#include "ranktune/train/pipeline.h"
#include "ranktune/train/profile.h"
#include "ranktune/train/progress.h"
#include "ranktune/train/replica_check.h"
#include "ranktune/train/train_checkpoint.h"

namespace ranktune {
namespace {

using Clock = std::chrono::steady_clock;

NamedTensors trainable(const torch::nn::Module& model) {
  NamedTensors out;
  for (auto& [name, p] : trainable_parameters(model)) out.insert(name, p);
  return out;
}

double seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// LoRA's adapter parameters (all that trains then), for the MFU formula; empty for a full fine-tune.
std::optional<std::int64_t> lora_adapter_params(const NamedTensors& params, bool lora) {
  if (!lora) return std::nullopt;
  std::int64_t n = 0;
  for (const auto& p : params.values()) n += p.numel();
  return n;
}

}  // namespace

struct Trainer::State {
  const Config& cfg;
  const MpiEnv& env;
  Communicator& comm;
  Llama model;
  const TokenData& data;
  at::Device device{at::kCPU};
  NamedTensors params;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<GradSync> sync;
  std::shared_ptr<PipelineExecutor> pipeline;  // balanced mode
  std::vector<int> gpus;                       // the CUDA devices holding weights (memory and MFU figures)
  // Balanced mode's GPUs besides the first stage's: their generators are checkpointed too (LoRA dropout draws there).
  std::vector<int> other_gpus() const {
    std::vector<int> out;
    for (int g : gpus)
      if (!(device.is_cuda() && g == device.index())) out.push_back(g);
    return out;
  }
  BatchPlan plan;
  LrSchedule schedule;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<MetricsWriter> metrics;
  double flops_per_token = 0;
  ParallelMode mode = ParallelMode::single;
  bool ddp() const { return mode == ParallelMode::ddp; }
  ModelRecord record;  // what the checkpoints say about the model
  h5::FileLocking locking = h5::FileLocking::best_effort;
  RunPosition pos;       // where the run stands (restored on resume)
  long last_saved = -1;  // step of the newest checkpoint this run committed or resumed from
  FaultHook fault;       // test hook (RANKTUNE_TEST_FAIL_AT_STEP); inert in real runs
  // DDP over several ranks: the replicas' trainable parameters compared byte for byte at each checkpoint and at the
  // end, before anything is written from rank 0's copy alone.
  std::optional<ReplicaDigest> replicas;
  long replicas_step = -1;
  std::optional<FrozenDigest> frozen;  // the NF4 base's CRCs (QLoRA), taken at the first check: it never changes
  void check_replicas(long step) {
    if (!ddp() || env.size() < 2 || step == replicas_step) return;
    if (!frozen) frozen = frozen_digest(llama_nf4_state(*model));
    replicas = replica_check(env, params, step, *frozen);
    replicas_step = step;
  }

  std::unique_ptr<CheckpointAsync> saver;  // checkpoint.async: periodic saves written in the background

  SaveRequest save_request(long step) const {
    SaveRequest req;
    req.dir = cfg.checkpoint.dir;
    req.step = step;
    req.keep = cfg.checkpoint.keep;
    req.locking = locking;
    req.meta.mode = parallel_mode_name(mode);
    req.meta.topology = std::to_string(env.size()) + " rank(s) on " + device.str();
    req.meta.config_hash = config_hash(cfg);
    req.meta.replicated = true;
    req.fault_hook = save_fault_hook_from_env(env.rank(), step);
    return req;
  }
  CheckpointState save_state() const {
    return train_state_capture(params, *opt, pos, env.rank() == 0, record, device, other_gpus());
  }
  // Logs a finished save (rank 0) and returns whether it committed. `mode`: sync or async. The `checkpoint timing:`
  // line is what bench/checkpoint_speed.sh reads: the stall, and rank 0's write of its own file.
  bool save_report(long step, const SaveResult& r, const char* mode) {
    char line[320];
    // Only a checkpoint this save wrote counts: a committed step met under this number was moved aside and written
    // anew (r.message says so), so success never stands for a step holding another state.
    if (r.ok()) {
      last_saved = step;
      std::snprintf(line, sizeof line, "checkpoint: step %ld -> %s (%.1f MB in %.2f s)", step, r.step_dir.c_str(),
                    static_cast<double>(r.bytes) / 1e6, r.seconds);
      log0() << line << (r.message.empty() ? "" : "; " + r.message);
      std::snprintf(line, sizeof line,
                    "checkpoint timing: step %ld %s: stall %.3f s (staging %.3f s), rank 0 wrote %.1f MB in %.2f s "
                    "(%.2f GB/s): HDF5 write %.2f s, fsync + rename %.2f s, CRC32C re-read %.2f s",
                    step, mode, r.stall_seconds, r.stage_seconds, static_cast<double>(r.write_bytes) / 1e6,
                    r.write_seconds,
                    r.write_seconds > 0 ? static_cast<double>(r.write_bytes) / 1e9 / r.write_seconds : 0.0,
                    r.hdf5_seconds, r.commit_seconds, r.crc_seconds);
      log0() << line;
      return true;
    }
    log0() << "WARNING: checkpoint of step " << step << " failed, training goes on: " << r.message;
    return false;
  }
  // A new save, the end of the run and a stop all wait for the background save to commit first.
  void save_wait() {
    if (saver && saver->pending()) save_report(saver->pending_step(), saver->wait(), "async");
  }
  // At every step boundary while a background save runs: commits it once every rank's file is written.
  void save_poll() {
    if (!saver || !saver->pending()) return;
    const long step = saver->pending_step();
    if (auto r = saver->poll()) save_report(step, *r, "async");
  }
  void save_async(long step) {
    save_wait();
    if (step == last_saved) return;
    check_replicas(step);
    const CheckpointAsync::Begun b = saver->begin(save_request(step), save_state());
    if (!b.fallback.empty()) log0() << "checkpoint: step " << step << " saved synchronously, " << b.fallback;
    if (b.result) {
      save_report(step, *b.result, b.fallback.empty() ? "async" : "sync");
      return;
    }
    char line[160];
    std::snprintf(line, sizeof line,
                  "checkpoint: staged step %ld (%.1f MB to host memory in %.3f s), writing in the background", step,
                  static_cast<double>(b.staged_bytes) / 1e6, b.stage_seconds);
    log0() << line;
  }

  State(const Config& c, const MpiEnv& e, Communicator& cm, Llama m, const TokenData& d)
      : cfg(c), env(e), comm(cm), model(std::move(m)), data(d) {}
};

Trainer::Trainer(const Config& cfg, const MpiEnv& env, Communicator& comm, ParallelMode mode, Llama model,
                 const TokenData& data, std::string base_identity, std::shared_ptr<PipelineExecutor> pipeline)
    : s_(std::make_unique<State>(cfg, env, comm, std::move(model), data)) {
  State& s = *s_;
  if ((mode == ParallelMode::balanced) != (pipeline != nullptr))
    throw LibraryError(std::string("Trainer: parallel mode ") + parallel_mode_name(mode) +
                       (pipeline ? " given a pipeline" : " without its pipeline"));
  s.mode = mode;
  s.pipeline = std::move(pipeline);
  for (const auto& p : s.model->parameters())
    if (p.is_cuda() && std::find(s.gpus.begin(), s.gpus.end(), p.get_device()) == s.gpus.end())
      s.gpus.push_back(p.get_device());
  s.record = model_record_make(cfg, llama_config_to_json(s.model->config()), std::move(base_identity));
  s.locking = h5::file_locking_parse(cfg.checkpoint.file_locking);
  s.device = s.model->parameters().front().device();
  s.params = trainable(*s.model);
  if (s.params.is_empty()) throw ConfigError("the model has no trainable parameter");
  if (s.ddp()) {
    GradSyncOptions o;
    o.bucket_mb = cfg.parallel.bucket_mb;
    s.sync = std::make_unique<GradSync>(comm, s.params, o);  // also broadcasts rank 0's weights
    log0() << s.sync->describe();
  }
  s.opt = std::make_unique<AdamW>(s.params, adamw_options_from_config(cfg.train));
  s.plan = batch_plan_from_config(cfg.train, env.size());
  s.schedule = lr_schedule_from_config(cfg.train);
  SamplerOptions so;
  so.num_rows = static_cast<std::int64_t>(data.train.size());
  so.micro_batch = cfg.train.micro_batch;
  so.grad_accum = cfg.train.grad_accum;
  so.seed = static_cast<std::uint64_t>(cfg.seed);
  s.sampler = std::make_unique<Sampler>(so, env.rank(), env.size());
  s.fault = fault_hook_from_env(env.rank());
  save_fault_hook_from_env(env.rank(), 0);  // test hook: a malformed value fails at start, not at the first save
  if (cfg.checkpoint.async) {
    if (const std::string why = CheckpointAsync::unavailable(env); why.empty())
      s.saver = std::make_unique<CheckpointAsync>(env);
    else log0() << "WARNING: checkpoint.async is off, every save is synchronous: " << why;
  }
  if (!cfg.checkpoint.dir.empty())  // every rank writes its own file of each checkpoint
    agree_run(env, [&] { dir_require_writable(cfg.checkpoint.dir, "checkpoint", "checkpoint.dir", env.rank()); });
  resume();
  // After resume, which may load other state into the same tensors: the staging buffer takes the saved layout.
  if (s.saver) log0() << "checkpoint.async: " << s.saver->reserve(s.save_state());
  s.metrics = std::make_unique<MetricsWriter>(cfg.output_dir, /*append=*/s.pos.step > 0, env.rank() == 0);
  s.flops_per_token =
      train_flops_per_token(s.model->config(), cfg.train.seq_len, lora_adapter_params(s.params, cfg.lora.r > 0));
  log0() << s.plan.describe();
  log0() << s.opt->describe();
}

Trainer::~Trainer() = default;

void Trainer::resume() {
  State& s = *s_;
  const auto t0 = Clock::now();
  const auto loaded = checkpoint_resume(s.env, s.cfg.resume, s.cfg.checkpoint.dir, s.locking);
  if (!loaded) {
    if (s.cfg.resume == "auto")
      log0() << "resume: no committed checkpoint under " << s.cfg.checkpoint.dir << ", starting fresh";
    return;
  }
  agree_run(s.env, [&] {
    resume_check_config(*loaded, s.cfg);
    s.pos = train_state_restore(*loaded, s.params, *s.opt, s.record.base_identity, s.cfg.lora.r > 0, s.device,
                                s.other_gpus());
  });
  s.sampler->seek(s.pos.cursor);
  s.last_saved = s.pos.step;
  std::uint64_t bytes = 0;
  for (const auto& f : loaded->manifest.files) bytes += f.size;
  char took[96];
  std::snprintf(took, sizeof took, "%.1f MB verified and read in %.2f s", static_cast<double>(bytes) / 1e6,
                std::chrono::duration<double>(Clock::now() - t0).count());
  log0() << "resume: " << loaded->step_dir.string() << " (step " << s.pos.step << ", " << s.pos.tokens << " tokens"
         << (loaded->resharded ? ", saved at world size " + std::to_string(loaded->manifest.world_size) : std::string())
         << "; " << took << ")";
}

bool Trainer::save(long step) {
  State& s = *s_;
  s.save_wait();
  if (step == s.last_saved) return true;
  s.check_replicas(step);  // a diverged replica must not be committed as the run's state
  return s.save_report(step, checkpoint_save(s.env, s.save_request(step), s.save_state()), "sync");
}

double Trainer::evaluate() {
  State& s = *s_;
  if (s.data.val.empty()) return -1;
  torch::NoGradGuard no_grad;
  s.model->eval();
  std::vector<double> acc{0, 0};  // loss sum, tokens
  // Rank r evaluates rows r, r + N, ...: every held-out row exactly once whatever the world size.
  std::vector<std::int64_t> mine;
  for (std::int64_t i = s.env.rank(); i < static_cast<std::int64_t>(s.data.val.size()); i += s.env.size())
    mine.push_back(i);
  const auto micro = static_cast<std::size_t>(s.cfg.train.micro_batch);
  for (std::size_t b = 0; b < mine.size(); b += micro) {
    std::vector<std::int64_t> idx(mine.begin() + static_cast<std::ptrdiff_t>(b),
                                  mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), b + micro)));
    const BatchTensors bt = batch_tensors(s.data.val, idx, s.device, s.data.packing_attention);
    acc[0] += head_loss_sum(*s.model, s.model->hidden_states(bt.tokens, bt.positions, bt.documents), bt.targets)
                  .item<double>();
    acc[1] += static_cast<double>(bt.loss_tokens);
  }
  host::sum(s.env, acc);
  s.model->train();
  return acc[1] > 0 ? acc[0] / acc[1] : -1;
}

// A step whose forward and backward are queued.
struct Trainer::Launched {
  long step = 0;  // 0-based index
  double lr = 0;
  std::int64_t global_tokens = 0;  // loss tokens of the global batch
  at::Tensor loss_sum;             // fp64 on the device, summed over this rank's micro-batches
  SamplerCursor cursor;            // the sampler's position after this step's batches
};

// A step whose update is queued too: its loss and gradient norm are on their way to the host.
struct Trainer::Updated {
  long step = 0;
  double lr = 0;
  std::int64_t global_tokens = 0;
  long tokens = 0;  // tokens trained on after this step, all ranks
  at::Tensor host;  // [loss sum, norm], fp64 on the host (pinned memory when they come from a GPU)
#ifdef RANKTUNE_HAVE_CUDA
  std::optional<at::cuda::CUDAEvent> arrived;  // recorded after the copy into `host`
#endif
};

TrainResult Trainer::run() {
  State& s = *s_;
  const TrainConfig& t = s.cfg.train;
  TrainResult result;
  result.first_step = s.pos.step + 1;
  result.steps = s.pos.step;  // a run resumed at or past train.steps takes no step
  Progress progress(std::cout, t.steps, t.log_every, s.pos.step, s.env.rank() == 0 && Progress::stdout_is_tty());
  s.model->train();
  signals_hold_term(true);  // from here on SIGTERM means: save if there is time, then exit
  const auto start = Clock::now();
  auto last = start;
  const auto profiler = step_profiler_from_config(s.cfg, s.pos.step, s.env.rank(), s.env.size(), s.gpus);
  std::optional<Launched> ahead;  // the next step, launched before this one was read (train.queue_ahead)
  RngBlobs rng_at_boundary;       // the generators before `ahead` drew from them: what a stop here saves
  for (long step = s.pos.step; step < t.steps; ++step) {
    long working = step;  // the step an out-of-memory error is reported at
    try {
      if (!ahead) {
        if (profiler) profiler->step_begin(step);
        ahead = launch(step);
      }
      Updated done = update(std::move(*ahead));
      ahead.reset();
      if (queue_ahead_after(step + 1, profiler && profiler->last_profiled(step))) {
        rng_at_boundary = rng_capture(s.device, s.other_gpus());
        working = step + 1;
        if (profiler) profiler->step_begin(step + 1);
        ahead = launch(step + 1);
        working = step;
      }
      StepMetrics row = read(std::move(done));
      if (profiler) profiler->step_end(step);
      const auto now = Clock::now();
      time_step(row, seconds(last, now), seconds(start, now), result);
      report(row, result, progress);
      if (stop_or_save(row.step, result, ahead ? &rng_at_boundary : nullptr)) break;
    } catch (const c10::OutOfMemoryError& e) {  // the allocator's text, turned into exit 7 and the plan's ways out
      throw out_of_memory_error(e.what_without_backtrace(), s.env.rank(), working + 1, s.cfg, s.model->config(),
                                s.device.is_cuda());
    }
    last = Clock::now();  // the next step's tokens/s counts its own work, not this step's evaluation or save
  }
  finish(result, progress);
  return result;
}

// Not before a boundary that evaluates or saves (they read the state of this step alone, and a planned save's RNG
// state must be the boundary's), nor past the last step or the profiled window. The same answer on every rank: the
// ranks' host collectives keep one order.
bool Trainer::queue_ahead_after(long step, bool profiling_ends) const {
  const State& s = *s_;
  const TrainConfig& t = s.cfg.train;
  if (!t.queue_ahead || s.pipeline || step >= t.steps || profiling_ends) return false;
  const bool eval = t.eval_every > 0 && step % t.eval_every == 0;
  const bool save = s.cfg.checkpoint.every_steps > 0 && step % s.cfg.checkpoint.every_steps == 0;
  return !eval && !save;
}

Trainer::Launched Trainer::launch(long step) {
  State& s = *s_;
  fault_hook_fire(s.fault, s.env.rank(), step + 1);
  Launched l;
  l.step = step;
  l.lr = lr_at(s.schedule, step);
  const auto micro = s.sampler->next_step();
  l.cursor = s.sampler->cursor();
  std::int64_t tokens = 0;
  for (const auto& m : micro) tokens += count_loss_tokens(s.data.train, m);
  l.global_tokens = host::sum(s.env, tokens);
  const double scale = token_loss_scale(l.global_tokens, s.env.size());

  // The summed loss stays on the device (in fp64, as the host sums it) until update() has queued the optimizer's
  // kernels: no host sync between backward, clipping and the update.
  for (std::size_t m = 0; m < micro.size(); ++m) {
    if (s.sync) s.sync->prepare(s.plan.last_micro_step(static_cast<int>(m)));
    const BatchTensors bt = batch_tensors(s.data.train, micro[m], s.device, s.data.packing_attention);
    at::Tensor sum;
    if (s.pipeline) {
      sum = s.pipeline->forward_backward(bt, scale);
    } else {
      sum = head_loss_sum(*s.model, s.model->hidden_states(bt.tokens, bt.positions, bt.documents), bt.targets);
      (sum * scale).backward();
    }
    const at::Tensor part = sum.detach().to(at::kDouble);
    l.loss_sum = l.loss_sum.defined() ? l.loss_sum + part.to(l.loss_sum.device()) : part;
  }
  return l;
}

Trainer::Updated Trainer::update(Launched&& l) {
  State& s = *s_;
  if (s.sync) s.sync->finish();
  fault_hook_poison_grads(s.fault, l.step + 1, s.params);
  // Clipping's scale goes to the optimizer, which applies it as it reads the gradients (grad_clip 0: measured only).
  const at::Tensor norm_t = grad_norm_tensor(s.params);
  s.opt->step(l.lr, s.cfg.train.grad_clip > 0 ? clip_coefficient(norm_t, s.cfg.train.grad_clip) : at::Tensor());
  if (s.sync) s.sync->zero_grad();
  else release_grads(s.params);

  s.pos.step = l.step + 1;
  s.pos.tokens += s.plan.tokens_per_step();
  s.pos.cursor = l.cursor;
  Updated u;
  u.step = l.step;
  u.lr = l.lr;
  u.global_tokens = l.global_tokens;
  u.tokens = s.pos.tokens;
  // One copy to the host a step, the loss and the norm together, waited for only by read().
  if (!l.loss_sum.defined()) l.loss_sum = at::zeros({}, at::kDouble);
  const at::Tensor both = at::stack({l.loss_sum, norm_t.to(l.loss_sum.device(), at::kDouble)});
#ifdef RANKTUNE_HAVE_CUDA
  if (both.is_cuda()) {
    u.host = at::empty({2}, at::TensorOptions().dtype(at::kDouble).pinned_memory(true));
    u.host.copy_(both, /*non_blocking=*/true);
    u.arrived.emplace();
    u.arrived->record(at::cuda::getCurrentCUDAStream(both.device().index()));
    return u;
  }
#endif
  u.host = both.cpu();
  return u;
}

StepMetrics Trainer::read(Updated&& u) {
  State& s = *s_;
#ifdef RANKTUNE_HAVE_CUDA
  if (u.arrived) u.arrived->synchronize();
#endif
  const double norm = u.host[1].item<double>();
  const double loss = host::sum(s.env, u.host[0].item<double>());
  StepMetrics row;
  row.step = u.step + 1;
  row.loss = u.global_tokens > 0 ? loss / static_cast<double>(u.global_tokens) : NAN;
  row.lr = u.lr;
  row.grad_norm = norm;
  row.tokens = u.tokens;
  return row;
}

void Trainer::time_step(StepMetrics& row, double step_s, double elapsed_s, TrainResult& result) {
  State& s = *s_;
  row.tokens_per_s = static_cast<double>(s.plan.tokens_per_step()) / step_s;
  row.elapsed_s = elapsed_s;
  result.step_seconds += step_s;
  if (s.pipeline) {
    const auto busy = s.pipeline->take_busy_seconds();
    result.stage_busy_s.resize(busy.size());
    for (std::size_t i = 0; i < busy.size(); ++i) result.stage_busy_s[i] += busy[i];
  }
  const int gpus = s.pipeline ? static_cast<int>(s.gpus.size()) : s.env.size();
  row.mfu = s.device.is_cuda() ? mfu(row.tokens_per_s, s.flops_per_token, gpus) : NAN;
  if (s.device.is_cuda()) {
    row.gpu_mem_gib = 0;  // the fullest device
    result.device_peak_gib.resize(s.gpus.size());
    for (std::size_t i = 0; i < s.gpus.size(); ++i) {
      const double peak = cuda_peak_memory_gib(s.gpus[i], true);
      row.gpu_mem_gib = std::max(row.gpu_mem_gib, peak);
      result.device_peak_gib[i] = {s.gpus[i], std::max(result.device_peak_gib[i].second, peak)};
    }
  }
}

void Trainer::report(StepMetrics& row, TrainResult& result, Progress& progress) {
  State& s = *s_;
  const TrainConfig& t = s.cfg.train;
  // A finite loss does not prove a sane step: an overflowing gradient already reached the weights through the
  // optimizer, so stop before this step can be evaluated or saved.
  const bool finite = std::isfinite(row.loss) && std::isfinite(row.grad_norm);
  // A background save of an earlier step holds a sane state, which a synchronous save would have committed by now:
  // it commits before the error ends the run. The commit is collective, so while one is pending the ranks agree on
  // the verdict (the loss is all-reduced, the norm is of all-reduced gradients, but a rank must never be left alone
  // in the commit).
  const bool any_bad = s.saver && s.saver->pending() ? host::any(s.env, !finite) : !finite;
  if (any_bad && s.saver) s.save_wait();
  if (!std::isfinite(row.loss))
    throw Error(ExitCode::internal,
                "training loss became " + std::to_string(row.loss) + " at step " + std::to_string(row.step),
                "lower --train.lr or enable --train.grad_clip");
  if (!std::isfinite(row.grad_norm))
    throw Error(ExitCode::internal,
                "gradient norm became " + std::to_string(row.grad_norm) + " at step " + std::to_string(row.step),
                "lower --train.lr or enable --train.grad_clip");
  if (any_bad)
    throw Error(ExitCode::internal,
                "another rank's training loss or gradient norm became non-finite at step " + std::to_string(row.step),
                "lower --train.lr or enable --train.grad_clip");
  if ((t.eval_every > 0 && row.step % t.eval_every == 0) || row.step == t.steps) {
    row.eval_loss = evaluate();
    result.final_eval_loss = *row.eval_loss;
  }
  result.losses.push_back(row.loss);
  result.steps = row.step;
  if (s.env.rank() == 0) {
    s.metrics->write(row);
    progress.update(row);
  }
}

bool Trainer::stop_or_save(long step, TrainResult& result, const RngBlobs* rng_at_boundary) {
  State& s = *s_;
  s.save_poll();
  // Every rank learns at the same boundary whether any rank was signalled.
  const StopAgreement stop = signals_agree(s.env);
  if (stop.request != StopRequest::none) {
    result.stopped = true;
    result.stop_reason = stop_agreement_describe(stop);
    log0() << "stop: " << result.stop_reason << " at step " << step;
    // The step queued ahead is dropped (its update never ran); what it drew from the generators is taken back.
    if (rng_at_boundary) rng_set(*rng_at_boundary, s.device, s.other_gpus());
    result.saved = save(step);
    return true;
  }
  const bool periodic = s.cfg.checkpoint.every_steps > 0 && step % s.cfg.checkpoint.every_steps == 0;
  const bool last = step == s.cfg.train.steps;
  // The save after the last step and a stop's save are synchronous: nothing is left to overlap with them.
  if (periodic && !last && s.saver) s.save_async(step);
  else if (periodic || (last && s.cfg.checkpoint.at_end)) save(step);
  return false;
}

void Trainer::finish(TrainResult& result, Progress& progress) {
  State& s = *s_;
  // After a stop the checkpoint is committed and the process is on its way to exit 75: a second SIGTERM (Slurm sends
  // one to every process) must not turn that into death by signal, which the batch script would not requeue.
  s.save_wait();  // a background save commits before the run ends, whatever ended it
  if (!result.stopped) signals_hold_term(false);
  s.check_replicas(s.pos.step);
  if (s.env.rank() == 0) {
    progress.finish();
    log0() << "metrics: " << s.metrics->jsonl_path() << " and " << s.metrics->csv_path();
  }
  if (s.replicas) log0() << replica_digest_describe(*s.replicas);
}

}  // namespace ranktune
