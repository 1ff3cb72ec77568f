// `ranktune train`: config -> topology -> mode -> communicator -> data -> model (+ LoRA) -> trainer -> sample.
#include <ATen/ATen.h>

#include "ranktune/app/commands.h"
#include "ranktune/core/log.h"
#include "ranktune/dist/agree.h"
#include "ranktune/dist/communicator.h"
#include "ranktune/dist/mpi_env.h"
#include "ranktune/dist/parallel_mode.h"
#include "ranktune/dist/topology_detect.h"
#include "ranktune/model/hf_checkpoint.h"
#include "ranktune/model/lora.h"
#include "ranktune/plan/layer_cost.h"
#include "ranktune/train/generate.h"
#include "ranktune/train/token_data.h"
#include "ranktune/train/trainer.h"

namespace ranktune {
namespace {

Llama build_model(const Config& cfg, const at::Device& device) {
  const at::TensorOptions options = at::TensorOptions(device).dtype(llama_dtype(device, cfg.train.precision));
  Llama model = cfg.model.path.empty()
                    ? llama_random(llama_config_from_model(cfg.model), static_cast<std::uint64_t>(cfg.seed), options)
                    : llama_from_pretrained(cfg.model.path, options);
  if (cfg.lora.r > 0) lora_apply(*model, cfg.lora, static_cast<std::uint64_t>(cfg.seed));
  return model;
}

// Names the frozen base a LoRA checkpoint belongs to: where the weights came from and a hash of the architecture.
std::string base_identity(const Config& cfg, const LlamaImpl& model) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : llama_config_to_json(model.config())) h = (h ^ c) * 1099511628211ull;
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return (cfg.model.path.empty() ? "random init, seed " + std::to_string(cfg.seed) : cfg.model.path) +
         ", config " + hex;
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
  agree_run(ctx.env, [&] {
    if (cfg.train.activation_checkpointing)
      throw ConfigError("train.activation_checkpointing=true is not implemented by the trainer in this build",
                        "leave it false; `ranktune plan` still uses it to estimate a checkpointed footprint");
    const std::size_t stages = mode.on_gpu ? mode.balanced_devices.size() : 1;
    if (mode.mode == ParallelMode::balanced && stages > 1)
      throw UsageError("balanced execution over " + std::to_string(stages) +
                           " GPUs is not in this build: `ranktune plan` shows the placement it would use",
                       "run --parallel.mode=ddp with one rank per GPU, or make the model fit one GPU (--lora.r=16, "
                       "--train.activation_checkpointing=true)");
  });
  std::unique_ptr<Communicator> comm;
  agree_run(ctx.env, [&] { comm = communicator_create(ctx.env, mode, cfg.parallel.comm_timeout_s); });
  const at::Device device = mode.on_gpu ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(mode.device_of_rank.at(ctx.env.rank())))
                                        : at::Device(at::kCPU);
  at::manual_seed(static_cast<std::uint64_t>(cfg.seed) + static_cast<std::uint64_t>(ctx.env.rank()));

  TokenData data;
  Llama model{nullptr};
  agree_run(ctx.env, [&] {
    data = token_data_load(cfg);
    model = build_model(cfg, device);
    if (data.tokenizer->vocab_size() > model->config().vocab_size)
      throw ConfigError("tokenizer " + data.tokenizer->describe() + " has " + std::to_string(data.tokenizer->vocab_size()) +
                        " tokens but the model's vocabulary holds " + std::to_string(model->config().vocab_size),
                        "set model.vocab_size to at least the tokenizer's size, or use the model's own tokenizer");
  });
  log0() << "data: " << data.source << ", " << data.train.size() << " training rows, " << data.val.size()
         << " held-out rows of " << cfg.train.seq_len << " tokens; " << data.summary;

  std::unique_ptr<Trainer> trainer;
  agree_run(ctx.env, [&] {
    trainer = std::make_unique<Trainer>(cfg, ctx.env, *comm, mode.mode == ParallelMode::ddp, model, data,
                                        base_identity(cfg, *model));
  });
  const TrainResult result = trainer->run();
  if (result.stopped) {
    if (!result.saved)
      throw AgreedError(ExitCode::internal, "stopped by " + result.stop_reason + " but the checkpoint failed", "", 0);
    log0() << "preempted: checkpoint committed at step " << result.steps << "; exit "
           << static_cast<int>(ExitCode::preempted_saved) << " so the batch script requeues";
    return static_cast<int>(ExitCode::preempted_saved);
  }
  if (result.losses.empty()) {
    log0() << "nothing to do: the checkpoint is already at step " << result.steps << " of " << cfg.train.steps;
    return 0;
  }
  if (ctx.env.rank() == 0) log_sample(*model, data);
  char line[200];
  std::snprintf(line, sizeof line, "done: %ld steps, loss %.4f -> %.4f, held-out loss %.4f", result.steps,
                result.losses.front(), result.losses.back(), result.final_eval_loss);
  log0() << line;
  return 0;
}

}  // namespace ranktune
