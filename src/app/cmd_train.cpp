// `ranktune train`: config -> topology -> mode -> communicator -> tokenizer -> data -> model (+ LoRA) -> trainer ->
// sample.
// The recipe only: every step's logic lives in its layer; each phase that can fail runs under agree_run, so that all
// ranks exit with the first failing rank's error.
#include <ATen/ATen.h>

#include <cstdio>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ranktune/app/balanced_setup.h"
#include "ranktune/app/commands.h"
#include "ranktune/app/tokenizer_choice.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/communicator.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/parallel_mode.h"
#include "ranktune/distributed/topology_detect.h"
#include "ranktune/io/checkpoint_async.h"
#include "ranktune/io/token_dataset.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/quantize.h"
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
  const bool on_gpu = device_resolve(cfg.device, facts) == "cuda";
  const std::int64_t footprint = training_footprint_bytes(configured_model_shape(cfg), train_setup_from(cfg, on_gpu));
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
  // model.quantize=nf4: the decoder linears are quantized layer by layer as they are made (model/quantize.h).
  const Quantize q = quantize_parse(cfg.model.quantize);
  Llama model = cfg.model.path.empty() ? llama_random_quantized(llama_config_from_model(cfg.model),
                                                                static_cast<std::uint64_t>(cfg.seed), options, q)
                                       : llama_from_pretrained_quantized(cfg.model.path, options, q);
  if (cfg.lora.r > 0) lora_apply(*model, cfg.lora, static_cast<std::uint64_t>(cfg.seed));
  model->set_fused_kernels(cfg.train.kernels == "fused");
  model->set_flash_varlen(cfg.train.flash_varlen);
  model->set_activation_checkpointing(cfg.train.activation_checkpointing, cfg.train.activation_checkpointing_layers);
  model->set_mlp_chunk_tokens(cfg.train.mlp_chunk_tokens);
  model->set_fused_loss(fused_loss_on(cfg.train, compute.is_cuda()));
  return model;
}

// train.activation_offload, turned on here with its cap on what a rank's offloaded layer inputs hold on the host,
// taken once the model is built (its loading no longer needs the memory): the configured GiB, else 80% of what is
// available, shared among the node's ranks. 344,064 tokens of Llama-3-8B offload 84 GiB (pinned in pieces,
// core/pinned_bytes.h; 128 GiB in whole blocks, which an uncapped run learnt from the out-of-memory killer).
void set_offload_budget(const Config& cfg, const MpiEnv& env, LlamaImpl& model) {
  if (!cfg.train.activation_offload || !cfg.train.activation_checkpointing) return;
  const HostMemory host = host_memory_available();
  const std::int64_t cap = offload_host_budget(cfg.train.activation_offload_host_gib, host.bytes, env.local_size());
  model.set_activation_offload(true, cap);
  std::ostringstream line;
  line << std::setprecision(3) << "activation offload: ";
  if (cap == std::numeric_limits<std::int64_t>::max()) {
    line << "no cap on the host memory of the layer inputs (the host's available memory is unknown; "
         << "train.activation_offload_host_gib sets one)";
  } else {
    line << "at most " << static_cast<double>(cap) / (1 << 30) << " GiB of pinned host memory a rank for the layer "
         << "inputs (";
    if (cfg.train.activation_offload_host_gib > 0) line << "train.activation_offload_host_gib";
    else
      line << "80% of " << static_cast<double>(host.bytes) / (1 << 30) << " GiB available by " << host.what << ", "
           << env.local_size() << " rank(s) on this node";
    line << "); inputs past it stay on the device";
  }
  log0() << line.str();
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
// config.json, read here before the tokenizer, the data and the weights.
void check_sequence_length(const Config& cfg, const LlamaConfig& shape) {
  const std::int64_t max_positions = shape.max_position_embeddings;
  if (cfg.model.path.empty() || cfg.train.seq_len <= max_positions) return;
  throw ConfigError("train.seq_len (" + std::to_string(cfg.train.seq_len) + ") exceeds max_position_embeddings (" +
                        std::to_string(max_positions) + ") in " + cfg.model.path + "/config.json",
                    "lower --train.seq_len to at most " + std::to_string(max_positions));
}

// A random-init model against its tokenizer (a model directory's tokenizer is checked by tokenizer_open).
void check_vocabulary(const Tokenizer& tokenizer, const LlamaImpl& model) {
  if (tokenizer.vocab_size() > model.config().vocab_size)
    throw ConfigError("tokenizer " + tokenizer.describe() + " has " + std::to_string(tokenizer.vocab_size()) +
                          " tokens but the model's vocabulary holds " + std::to_string(model.config().vocab_size),
                      "set model.vocab_size to at least the tokenizer's size, or use the model's own tokenizer");
}

// The effective configuration; with model.path the [model] shape keys show what its config.json holds, since that is
// what is built (a shape key given alongside model.path is ignored, and the table says so).
std::string effective_config_table(const Config& cfg, const ConfigValues& given) {
  if (cfg.model.path.empty()) return config_table(cfg, given);
  LlamaConfig c;
  try {
    c = configured_model_shape(cfg);
  } catch (const Error&) {
    return config_table(cfg, given);  // the same error stops the run right after, under agree_run
  }
  Config shown = cfg;
  ConfigValues values = given;
  ModelConfig& m = shown.model;
  const std::pair<const char*, std::function<void()>> keys[] = {
      {"model.hidden_size", [&] { m.hidden_size = static_cast<int>(c.hidden_size); }},
      {"model.num_layers", [&] { m.num_layers = static_cast<int>(c.num_layers); }},
      {"model.num_heads", [&] { m.num_heads = static_cast<int>(c.num_heads); }},
      {"model.num_kv_heads", [&] { m.num_kv_heads = static_cast<int>(c.num_kv_heads); }},
      {"model.intermediate_size", [&] { m.intermediate_size = static_cast<int>(c.intermediate_size); }},
      {"model.vocab_size", [&] { m.vocab_size = static_cast<int>(c.vocab_size); }},
      {"model.max_seq_len", [&] { m.max_seq_len = static_cast<int>(c.max_position_embeddings); }},
      {"model.rope_theta", [&] { m.rope_theta = c.rope_theta; }},
      {"model.rms_norm_eps", [&] { m.rms_norm_eps = c.rms_norm_eps; }},
      {"model.tie_embeddings", [&] { m.tie_embeddings = c.tie_word_embeddings; }},
  };
  const std::string from = cfg.model.path + "/config.json";
  for (const auto& [key, set] : keys) {
    set();
    const auto it = given.find(key);
    values[key].origin = from + (it == given.end() ? "" : " (" + it->second.origin + " ignored)");
  }
  return config_table(shown, values);
}

std::string count_text(std::int64_t n) {
  char s[32];
  if (n >= 1000000000) std::snprintf(s, sizeof s, "%.2fB", static_cast<double>(n) / 1e9);
  else if (n >= 1000000) std::snprintf(s, sizeof s, "%.2fM", static_cast<double>(n) / 1e6);
  else if (n >= 1000) std::snprintf(s, sizeof s, "%.1fK", static_cast<double>(n) / 1e3);
  else std::snprintf(s, sizeof s, "%lld", static_cast<long long>(n));
  return s;
}

// What was built: where from, the shape, the parameters, and what of them trains.
std::string model_summary(const Config& cfg, const LlamaImpl& model) {
  const LlamaConfig& c = model.config();
  std::int64_t trainable = 0;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) trainable += p.numel();
  const std::int64_t base = llama_parameter_count(c);
  std::ostringstream os;
  os << "model: " << c.model_type << " from "
     << (cfg.model.path.empty() ? "random init (the [model] keys, seed " + std::to_string(cfg.seed) + ")"
                                : cfg.model.path + "/config.json")
     << ": " << c.num_layers << " layers, hidden " << c.hidden_size << ", " << c.num_heads << " heads of " << c.head_dim
     << ", " << c.num_kv_heads << " kv heads, intermediate " << c.intermediate_size << ", vocab " << c.vocab_size
     << ", max positions " << c.max_position_embeddings << ", rope_theta " << c.rope_theta
     << (c.rope_scaling.type.empty() ? "" : " (" + c.rope_scaling.type + " scaling)")
     << (c.tie_word_embeddings ? ", tied embeddings" : "") << "; " << base << " parameters (" << count_text(base)
     << ")\n";
  if (llama_quantized(model)) {
    const auto [dense, packed] = llama_nf4_bytes(model);
    char nf4[160];
    std::snprintf(nf4, sizeof nf4, "base: decoder linears in NF4 (model.quantize=nf4): %.3g MiB for %.3g MiB in bf16\n",
                  static_cast<double>(packed) / 1048576.0, static_cast<double>(dense) / 1048576.0);
    os << nf4;
  }
  char share[32];
  std::snprintf(share, sizeof share, "%.3g%%", 100.0 * static_cast<double>(trainable) / static_cast<double>(base));
  if (cfg.lora.r > 0) {
    std::string targets;
    for (const auto& t : lora_target_modules(cfg.lora.target_modules)) targets += (targets.empty() ? "" : ",") + t;
    os << "trainable: LoRA r=" << cfg.lora.r << ", alpha " << cfg.lora.alpha << ", dropout " << cfg.lora.dropout
       << " on " << targets << ": " << trainable << " parameters (" << count_text(trainable) << ", " << share
       << " of the model's)";
  } else {
    os << "trainable: every parameter (full fine-tune): " << trainable << " (" << count_text(trainable) << ")";
  }
  if (cfg.train.fp8_matmuls)
    os << "\nbase matmuls: FP8 e4m3 with row-wise scales (train.fp8_matmuls): the adapted linears' frozen weights and "
          "their inputs and output gradients quantized in each call; the adapters, norms, attention and loss "
          "unchanged";
  if (const std::int64_t recomputed = model.activation_checkpointed_layers(); recomputed > 0) {
    os << "\nactivation checkpointing: ";
    if (recomputed == c.num_layers) {
      os << "every layer recomputes its forward in backward";
    } else {
      os << recomputed << " of " << c.num_layers << " layers recompute their forward in backward (";
      for (std::int64_t i = 0, shown = 0; i < c.num_layers; ++i)
        if (model.activation_checkpointed(i)) os << (shown++ ? "," : "") << i;
      os << "; train.activation_checkpointing_layers), the others keep their activations";
    }
  }
  return os.str();
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
  log0() << "ranktune train: effective configuration\n" << effective_config_table(cfg, ctx.request.values);
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
  Config data_cfg = cfg;  // data.tokenizer as chosen: what the data is tokenized with and the checkpoint records
  // A prepared dataset is read through for its CRC32C once per node (each local rank a share of the files), and every
  // rank learns the outcome before any rank lets HDF5 parse a file, which can crash on damaged metadata.
  const bool prepared = !cfg.data.path.empty() && TokenDatasetReader::is_dataset_path(cfg.data.path);
  agree_run(ctx.env, [&] {
    if (prepared) token_dataset_verify_files(cfg.data.path, ChecksumShare{ctx.env.local_rank(), ctx.env.local_size()});
  });
  agree_run(ctx.env, [&] {
    const LlamaConfig shape = configured_model_shape(cfg);
    check_sequence_length(cfg, shape);
    config_validate_for_layers(cfg, shape.num_layers);
    const TokenizerChoice choice = tokenizer_choose(cfg.data.tokenizer, cfg.model.path);
    std::unique_ptr<Tokenizer> tokenizer = tokenizer_open(choice);
    data_cfg.data.tokenizer = choice.spec;
    data = token_data_load(data_cfg, std::move(tokenizer), /*verified=*/prepared);
    model = build_model(cfg, balanced ? at::Device(at::kCPU) : device, device);
    if (balanced) pipeline = make_pipeline(cfg, placed, *model);
    if (cfg.train.fp8_matmuls) lora_use_fp8(*model, true);  // on each layer's own device, once placed
    set_offload_budget(cfg, ctx.env, *model);
    check_vocabulary(*data.tokenizer, *model);
  });
  log0() << model_summary(cfg, *model);
  log0() << "data: " << data.source << ", " << data.train.size() << " training rows, " << data.val.size()
         << " held-out rows of " << cfg.train.seq_len << " tokens; " << data.summary;

  Config run_cfg;
  std::unique_ptr<Trainer> trainer;
  agree_run(ctx.env, [&] {
    run_cfg = with_epochs(data_cfg, ctx, data);
    trainer = std::make_unique<Trainer>(run_cfg, ctx.env, *comm, mode.mode, model, data, run_base_identity(cfg, *model),
                                        pipeline);
  });
  const TrainResult result = trainer->run();
  if (const std::int64_t kept = model->offload_budget().refused(); kept > 0)
    log0() << "activation offload: " << kept
           << " layer inputs stayed on the device for want of host room (the cap above)";
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
