// `ranktune train`: config -> topology -> mode -> communicator -> data -> model (+ LoRA) -> trainer -> sample.
#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <string_view>

#include "ranktune/app/balanced_setup.h"
#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/distributed/topology_detect.h"
#include "ranktune/model/hf_checkpoint.h"
#include "ranktune/model/lora.h"
#include "ranktune/plan/layer_cost.h"
#include "ranktune/train/batch_plan.h"
#include "ranktune/train/generate.h"
#include "ranktune/train/pipeline.h"
#include "ranktune/train/token_data.h"
#include "ranktune/train/train_checkpoint.h"
#include "ranktune/train/trainer.h"

namespace ranktune {
namespace {

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

std::uint64_t fnv1a(std::uint64_t h, std::string_view text) {
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Names the frozen base a LoRA checkpoint belongs to: where the weights came from, a hash of the architecture and,
// for a model directory, a hash of its tensor index (sorted names, dtypes, shapes from the safetensors headers), so
// that the same path holding other tensors under the same config.json is another base.
std::string base_identity(const Config& cfg, const LlamaImpl& model) {
  const std::uint64_t fnv_offset = 1469598103934665603ull;
  const std::uint64_t config = fnv1a(fnv_offset, llama_config_to_json(model.config()));
  if (cfg.model.path.empty())
    return base_identity_text("random init, seed " + std::to_string(cfg.seed), config, std::nullopt);
  const HfCheckpoint files(cfg.model.path);  // maps the files again: headers only, no tensor is read
  std::uint64_t index = fnv_offset;
  for (const auto& name : files.names()) {
    const SafetensorsEntry& e = *files.find(name);
    std::string line = name + '\t' + safetensors_dtype_name(e.dtype) + '\t';
    for (std::int64_t d : e.shape) line += std::to_string(d) + ',';
    index = fnv1a(index, line + '\n');
  }
  return base_identity_text(cfg.model.path, config, index);
}

// What the run learned, in words: greedy continuation of the start of a held-out document.
void log_sample(LlamaImpl& model, const TokenData& data) {
  const RowStore& rows = data.val.empty() ? data.train : data.val;
  std::vector<std::int32_t> prompt;
  for (std::int64_t r = 0; r < static_cast<std::int64_t>(rows.size()); ++r) {
    const PackedRow row = rows.row(r);  // the first document that starts inside a row, with room for a prompt
    for (std::size_t i = 0; i + 24 <= row.input_ids.size() && prompt.empty(); ++i)
      if (row.position_ids[i] == 0 && row.position_ids[i + 23] == 23 &&
          std::none_of(row.targets.begin() + static_cast<std::ptrdiff_t>(i),
                       row.targets.begin() + static_cast<std::ptrdiff_t>(i + 23),
                       [](std::int32_t t) { return t == kIgnoreTarget; }))
        prompt.assign(row.input_ids.begin() + static_cast<std::ptrdiff_t>(i),
                      row.input_ids.begin() + static_cast<std::ptrdiff_t>(i + 24));
    if (!prompt.empty()) break;
  }
  if (prompt.empty()) {
    const PackedRow first = rows.row(0);
    prompt.assign(first.input_ids.begin(), first.input_ids.begin() + 8);
  }
  GenerateOptions o;
  o.max_new_tokens = 80;
  o.stop_token = data.tokenizer->eos_id().value_or(-1);
  o.vocab_limit = data.tokenizer->vocab_size();
  const auto cont = generate(model, prompt, o);
  log0() << "sample: [" << data.tokenizer->decode(prompt) << "]" << data.tokenizer->decode(cont);
}

// train.epochs > 0: the number of steps that many passes over the training rows take (the incomplete last global
// batch of an epoch is not used, as the sampler does). When train.steps is set too, the command line wins over the
// config file; both at the same level is an error.
Config with_epochs(const Config& cfg, const AppContext& ctx, const TokenData& data) {
  Config out = cfg;
  if (cfg.train.epochs <= 0) return out;
  const auto& given = ctx.request.values;
  const auto steps = given.find("train.steps"), epochs = given.find("train.epochs");
  if (steps != given.end() && epochs != given.end()) {
    if (steps->second.source == epochs->second.source)
      throw AgreedError(ExitCode::usage, "train.steps (" + steps->second.origin + ") and train.epochs (" +
                                             epochs->second.origin + ") are both given",
                        "keep one of them: train.epochs derives the number of steps from the data", 0);
    if (steps->second.source == ConfigSource::command_line) {
      log0() << "epochs: train.steps from the command line replaces train.epochs of " << epochs->second.origin;
      return out;
    }
  }
  const long global_rows = batch_plan_from_config(cfg.train, ctx.env.size()).global_batch();
  const long per_epoch = static_cast<long>(data.train.size()) / global_rows;
  if (per_epoch == 0)
    throw AgreedError(ExitCode::usage, "one epoch (" + std::to_string(data.train.size()) +
                                           " training rows) is smaller than one global batch (" +
                                           std::to_string(global_rows) + " rows)",
                      "lower train.micro_batch or train.grad_accum, or give more data", 0);
  out.train.steps = static_cast<long>(std::ceil(cfg.train.epochs * static_cast<double>(per_epoch)));
  log0() << "epochs: " << cfg.train.epochs << " x (" << data.train.size() << " training rows / global batch of "
         << global_rows << ") = " << out.train.steps << " steps";
  return out;
}

}  // namespace

int cmd_train(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  log0() << "ranktune train: effective configuration\n" << config_table(cfg, ctx.request.values);
  const ClusterFacts facts = topology_detect(ctx.env, ctx.launch_env);
  ModeDecision mode;
  agree_run(ctx.env, [&] {
    const std::int64_t footprint =
        training_footprint_bytes(configured_model_shape(cfg), train_setup_from(cfg, cfg.device == "cuda"));
    mode = mode_decide(facts, ModeRequest{cfg.parallel.mode, cfg.device, footprint, cfg.parallel.reserve_gib});
  });
  log0() << topology_table(facts, mode);
  log0() << "cpu:    " << ctx.cpu_threads.describe();
  const bool balanced = mode.mode == ParallelMode::balanced;
  BalancedSetup placed;
  if (balanced) {  // the placement, before any weight is loaded
    agree_run(ctx.env, [&] {
      std::vector<GpuInfo> gpus;
      for (int d : mode.balanced_devices)
        for (const auto& g : facts.ranks.at(0).gpus)
          if (g.index == d) gpus.push_back(g);
      placed = balanced_setup(cfg, gpus, mode.on_gpu);
    });
    log0() << "balanced plan (weights + gradients + optimizer state + activations; time share from FLOPs):\n"
           << plan_table(placed.plan, balanced_stage_labels(placed));
  }
  std::unique_ptr<Communicator> comm;
  agree_run(ctx.env, [&] { comm = communicator_create(ctx.env, mode, cfg.parallel.comm_timeout_s); });
  auto device_of = [](int d) {
    return d < 0 ? at::Device(at::kCPU) : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d));
  };
  const at::Device device = balanced ? device_of(placed.stage_device.front())
                                     : device_of(mode.on_gpu ? mode.device_of_rank.at(ctx.env.rank()) : -1);
  at::manual_seed(static_cast<std::uint64_t>(cfg.seed) + static_cast<std::uint64_t>(ctx.env.rank()));

  TokenData data;
  Llama model{nullptr};
  std::shared_ptr<PipelineExecutor> pipeline;
  agree_run(ctx.env, [&] {
    data = token_data_load(cfg);
    model = build_model(cfg, balanced ? at::Device(at::kCPU) : device, device);
    if (balanced) {
      std::vector<at::Device> stage_devices;
      for (int d : placed.stage_device) stage_devices.push_back(device_of(d));
      const auto stages = stages_from_plan(placed.plan, stage_devices);
      place_stages(*model, stages);
      pipeline = std::make_shared<PipelineExecutor>(*model, stages, cfg.parallel.micro_batches,
                                                    stage_threads_from(cfg.parallel.stage_threads));
      log0() << pipeline->describe();
    }
    if (data.tokenizer->vocab_size() > model->config().vocab_size)
      throw ConfigError("tokenizer " + data.tokenizer->describe() + " has " + std::to_string(data.tokenizer->vocab_size()) +
                        " tokens but the model's vocabulary holds " + std::to_string(model->config().vocab_size),
                        "set model.vocab_size to at least the tokenizer's size, or use the model's own tokenizer");
  });
  log0() << "data: " << data.source << ", " << data.train.size() << " training rows, " << data.val.size()
         << " held-out rows of " << cfg.train.seq_len << " tokens; " << data.summary;

  const Config run_cfg = with_epochs(cfg, ctx, data);
  std::unique_ptr<Trainer> trainer;
  agree_run(ctx.env, [&] {
    trainer = std::make_unique<Trainer>(run_cfg, ctx.env, *comm, mode.mode == ParallelMode::ddp, model, data,
                                        base_identity(cfg, *model), pipeline);
  });
  const TrainResult result = trainer->run();
  if (result.stopped) {
    if (!result.saved)
      throw AgreedError(ExitCode::internal, "stopped by " + result.stop_reason + " but the checkpoint failed", "", 0);
    log0() << "preempted: checkpoint committed at step " << result.steps << "; exit "
           << static_cast<int>(ExitCode::preempted_saved) << " (the batch scripts requeue on it unless the job was cancelled)";
    return static_cast<int>(ExitCode::preempted_saved);
  }
  if (result.losses.empty()) {
    log0() << "nothing to do: the checkpoint is already at step " << result.steps << " of " << run_cfg.train.steps;
    return 0;
  }
  if (pipeline && result.step_seconds > 0) {  // how busy each device was: the pipeline's whole point
    std::string line =
        "balanced: busy time per stage over " + std::to_string(result.step_seconds).substr(0, 6) + " s of steps:";
    for (std::size_t i = 0; i < result.stage_busy_s.size(); ++i) {
      char part[96];
      std::snprintf(part, sizeof part, " %zu [%s] %.2f s (%.0f%%)", i, pipeline->stages()[i].device.str().c_str(),
                    result.stage_busy_s[i], 100 * result.stage_busy_s[i] / result.step_seconds);
      line += part;
    }
    log0() << line;
    if (!result.device_peak_gib.empty()) {
      line = "balanced: peak memory per GPU:";
      for (const auto& [device, gib] : result.device_peak_gib) {
        char part[48];
        std::snprintf(part, sizeof part, " cuda:%d %.1f GiB", device, gib);
        line += part;
      }
      log0() << line;
    }
  }
  if (ctx.env.rank() == 0) log_sample(*model, data);
  char line[200];
  std::snprintf(line, sizeof line, "done: %ld steps, loss %.4f -> %.4f, held-out loss %.4f", result.steps,
                result.losses.front(), result.losses.back(), result.final_eval_loss);
  log0() << line;
  return 0;
}

}  // namespace ranktune
