// `ranktune train`: config -> topology -> mode -> communicator -> data -> model (+ LoRA) -> trainer -> sample.
// The recipe only: every step's logic lives in its layer; each phase that can fail runs under agree_run, so that all
// ranks exit with the first failing rank's error.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "ranktune/app/balanced_setup.h"
#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/distributed/topology_detect.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/plan/layer_cost.h"
#include "ranktune/train/batch_plan.h"
#include "ranktune/train/generate.h"
#include "ranktune/train/metrics.h"
#include "ranktune/train/pipeline.h"
#include "ranktune/train/token_data.h"
#include "ranktune/train/train_checkpoint.h"
#include "ranktune/train/trainer.h"

namespace ranktune {
namespace {

at::Device device_of(int d) {
  return d < 0 ? at::Device(at::kCPU) : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d));
}

// The mode for this launch and this model's estimated footprint.
ModeDecision decide_mode(const Config& cfg, const ClusterFacts& facts) {
  const std::int64_t footprint =
      training_footprint_bytes(configured_model_shape(cfg), train_setup_from(cfg, cfg.device == "cuda"));
  return mode_decide(facts, ModeRequest{cfg.parallel.mode, cfg.device, footprint, cfg.parallel.reserve_gib});
}

// Balanced mode's placement over the devices the mode chose, before any weight is loaded.
BalancedSetup place_balanced(const Config& cfg, const ClusterFacts& facts, const ModeDecision& mode) {
  std::vector<GpuInfo> gpus;
  for (int d : mode.balanced_devices)
    for (const auto& g : facts.ranks.at(0).gpus)
      if (g.index == d) gpus.push_back(g);
  return balanced_setup(cfg, gpus, mode.on_gpu);
}

// Built on `device` with the dtype of `compute` (balanced mode builds on the CPU, then places the stages).
Llama build_model(const Config& cfg, const at::Device& device, const at::Device& compute) {
  const at::TensorOptions options = at::TensorOptions(device).dtype(llama_dtype(compute, cfg.train.precision));
  Llama model = cfg.model.path.empty()
                    ? llama_random(llama_config_from_model(cfg.model), static_cast<std::uint64_t>(cfg.seed), options)
                    : llama_from_pretrained(cfg.model.path, options);
  if (cfg.lora.r > 0) lora_apply(*model, cfg.lora, static_cast<std::uint64_t>(cfg.seed));
  model->set_activation_checkpointing(cfg.train.activation_checkpointing);
  return model;
}

// Balanced mode: the model's units moved to their stages' devices, and the executor that runs them.
std::shared_ptr<PipelineExecutor> make_pipeline(const Config& cfg, const BalancedSetup& placed, LlamaImpl& model) {
  std::vector<at::Device> stage_devices;
  for (int d : placed.stage_device) stage_devices.push_back(device_of(d));
  const auto stages = stages_from_plan(placed.plan, stage_devices);
  place_stages(model, stages);
  auto pipeline = std::make_shared<PipelineExecutor>(model, stages, cfg.parallel.micro_batches,
                                                     stage_threads_from(cfg.parallel.stage_threads));
  log0() << pipeline->describe();
  return pipeline;
}

// A random-init model's length is checked with the config (model.max_seq_len); a pretrained one's comes from its
// config.json, known only once it is read.
void check_sequence_length(const Config& cfg, const LlamaImpl& model) {
  const std::int64_t max_positions = model.config().max_position_embeddings;
  if (cfg.model.path.empty() || cfg.train.seq_len <= max_positions) return;
  throw ConfigError("train.seq_len (" + std::to_string(cfg.train.seq_len) + ") exceeds max_position_embeddings (" +
                        std::to_string(max_positions) + ") in " + cfg.model.path + "/config.json",
                    "lower --train.seq_len to at most " + std::to_string(max_positions));
}

void check_vocabulary(const Tokenizer& tokenizer, const LlamaImpl& model) {
  if (tokenizer.vocab_size() > model.config().vocab_size)
    throw ConfigError("tokenizer " + tokenizer.describe() + " has " + std::to_string(tokenizer.vocab_size()) +
                          " tokens but the model's vocabulary holds " + std::to_string(model.config().vocab_size),
                      "set model.vocab_size to at least the tokenizer's size, or use the model's own tokenizer");
}

// train.epochs > 0: train.steps becomes the steps that many passes over the training rows take (steps_for_epochs).
// When train.steps is set too, the command line wins over the config file; both at the same level is an error.
Config with_epochs(const Config& cfg, const AppContext& ctx, const TokenData& data) {
  Config out = cfg;
  if (cfg.train.epochs <= 0) return out;
  const auto& given = ctx.request.values;
  const auto steps = given.find("train.steps"), epochs = given.find("train.epochs");
  if (steps != given.end() && epochs != given.end()) {
    if (steps->second.source == epochs->second.source)
      throw AgreedError(ExitCode::usage,
                        "train.steps (" + steps->second.origin + ") and train.epochs (" + epochs->second.origin +
                            ") are both given",
                        "keep one of them: train.epochs derives the number of steps from the data", 0);
    if (steps->second.source == ConfigSource::command_line) {
      log0() << "epochs: train.steps from the command line replaces train.epochs of " << epochs->second.origin;
      return out;
    }
  }
  const BatchPlan plan = batch_plan_from_config(cfg.train, ctx.env.size());
  out.train.steps = steps_for_epochs(plan, cfg.train.epochs, static_cast<long>(data.train.size()));
  log0() << "epochs: " << cfg.train.epochs << " x (" << data.train.size() << " training rows / global batch of "
         << plan.global_batch() << ") = " << out.train.steps << " steps";
  return out;
}

// Balanced mode's closing lines: how busy each stage's device was, and its peak memory.
void log_balanced_report(const TrainResult& result, const PipelineExecutor* pipeline) {
  if (pipeline && result.step_seconds > 0) {  // how busy each device was: the pipeline's whole point
    log0() << "balanced: " << stage_busy_describe(pipeline->stages(), result.stage_busy_s, result.step_seconds);
    if (!result.device_peak_gib.empty()) log0() << "balanced: " << peak_memory_describe(result.device_peak_gib);
  }
}

}  // namespace

int cmd_train(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  log0() << "ranktune train: effective configuration\n" << config_table(cfg, ctx.request.values);
  const ClusterFacts facts = topology_detect(ctx.env, ctx.launch_env);
  ModeDecision mode;
  agree_run(ctx.env, [&] { mode = decide_mode(cfg, facts); });
  log0() << topology_table(facts, mode);
  log0() << "cpu:    " << ctx.cpu_threads.describe();
  const bool balanced = mode.mode == ParallelMode::balanced;
  BalancedSetup placed;
  if (balanced) {
    agree_run(ctx.env, [&] { placed = place_balanced(cfg, facts, mode); });
    log0() << "balanced plan (weights + gradients + optimizer state + activations; time share from FLOPs):\n"
           << plan_table(placed.plan, balanced_stage_labels(placed));
  }
  std::unique_ptr<Communicator> comm;
  agree_run(ctx.env, [&] { comm = communicator_create(ctx.env, mode, cfg.parallel.comm_timeout_s); });
  const at::Device device = balanced ? device_of(placed.stage_device.front())
                                     : device_of(mode.on_gpu ? mode.device_of_rank.at(ctx.env.rank()) : -1);
  at::manual_seed(static_cast<std::uint64_t>(cfg.seed) + static_cast<std::uint64_t>(ctx.env.rank()));

  TokenData data;
  Llama model{nullptr};
  std::shared_ptr<PipelineExecutor> pipeline;
  agree_run(ctx.env, [&] {
    data = token_data_load(cfg);
    model = build_model(cfg, balanced ? at::Device(at::kCPU) : device, device);
    if (balanced) pipeline = make_pipeline(cfg, placed, *model);
    check_sequence_length(cfg, *model);
    check_vocabulary(*data.tokenizer, *model);
  });
  log0() << "data: " << data.source << ", " << data.train.size() << " training rows, " << data.val.size()
         << " held-out rows of " << cfg.train.seq_len << " tokens; " << data.summary;

  Config run_cfg;
  std::unique_ptr<Trainer> trainer;
  agree_run(ctx.env, [&] {
    run_cfg = with_epochs(cfg, ctx, data);
    trainer = std::make_unique<Trainer>(run_cfg, ctx.env, *comm, mode.mode, model, data, run_base_identity(cfg, *model),
                                        pipeline);
  });
  const TrainResult result = trainer->run();
  if (result.stopped) {
    if (!result.saved)
      throw AgreedError(ExitCode::internal, "stopped by " + result.stop_reason + " but the checkpoint failed", "", 0);
    log0() << "preempted: checkpoint committed at step " << result.steps << "; exit "
           << static_cast<int>(ExitCode::preempted_saved)
           << " (the batch scripts requeue on it unless the job was cancelled)";
    return static_cast<int>(ExitCode::preempted_saved);
  }
  if (result.losses.empty()) {
    log0() << "nothing to do: the checkpoint is already at step " << result.steps << " of " << run_cfg.train.steps;
    return 0;
  }
  log_balanced_report(result, pipeline.get());
  if (ctx.env.rank() == 0)
    log0() << "sample: " << sample_text(*model, data.val.empty() ? data.train : data.val, *data.tokenizer);
  char line[200];
  std::snprintf(line, sizeof line, "done: %ld steps, loss %.4f -> %.4f, held-out loss %.4f", result.steps,
                result.losses.front(), result.losses.back(), result.final_eval_loss);
  log0() << line;
  return 0;
}

}  // namespace ranktune
