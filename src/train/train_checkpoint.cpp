#include "ranktune/train/train_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/types.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "ranktune/core/config_changes.h"
#include "ranktune/core/error.h"
#include "ranktune/core/hash.h"
#include "ranktune/core/log.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/llama.h"

namespace ranktune {
namespace {

constexpr const char* kWeights = "weights.";
constexpr const char* kOptim = "optim.";

const CheckpointState& replicated_source(const LoadedCheckpoint& ck) {
  return ck.manifest.replicated ? ck.shared : ck.state;
}

at::Tensor saved_tensor(const CheckpointState& st, const std::string& name, const std::string& where) {
  auto it = st.tensors.find(name);
  if (it == st.tensors.end())
    throw CheckpointError("checkpoint " + where + " lacks tensor '" + name + "'",
                          "it was written by a run with other trainable parameters (LoRA settings, model)");
  return it->second;
}

void generator_restore(at::Generator gen, const std::vector<std::uint8_t>& blob) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(checkpoint_blob_tensor(blob));
}

std::vector<std::uint8_t> generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return checkpoint_blob(gen.get_state());
}

constexpr const char* kTensorsTag = ", tensors ";

std::string hex64(std::uint64_t v) {
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(v));
  return hex;
}

}  // namespace

std::string base_identity_text(const std::string& origin, std::uint64_t config_hash,
                               std::optional<std::uint64_t> tensor_index_hash) {
  return origin + ", config " + hex64(config_hash) +
         (tensor_index_hash ? kTensorsTag + hex64(*tensor_index_hash) : std::string());
}

bool base_identity_same(const std::string& saved, const std::string& now) {
  if (saved == now) return true;
  const auto cut = now.rfind(kTensorsTag);
  return cut != std::string::npos && saved.find(kTensorsTag) == std::string::npos && saved == now.substr(0, cut);
}

std::string run_base_identity(const Config& cfg, const LlamaImpl& model) {
  const std::uint64_t config = fnv1a(llama_config_to_json(model.config()));
  if (cfg.model.path.empty())
    return base_identity_text("random init, seed " + std::to_string(cfg.seed), config, std::nullopt);
  const HfModelDir files(cfg.model.path);  // maps the files again: headers only, no tensor is read
  Fnv1a index;
  for (const auto& name : files.names()) {
    const SafetensorsEntry& e = *files.find(name);
    std::string line = name + '\t' + safetensors_dtype_name(e.dtype) + '\t';
    for (std::int64_t d : e.shape) line += std::to_string(d) + ',';
    index.update(line + '\n');
  }
  return base_identity_text(cfg.model.path, config, index.value());
}

ModelRecord model_record_make(const Config& cfg, std::string config_json, std::string base_identity) {
  ModelRecord r;
  r.base_identity = std::move(base_identity);
  r.config_json = std::move(config_json);
  // Absolute: `ranktune export` may run from another directory.
  if (!cfg.model.path.empty()) r.base_path = std::filesystem::absolute(cfg.model.path).lexically_normal().string();
  r.lora = cfg.lora;
  if (const std::string tok = config_tokenizer(cfg); tok != "byte")
    r.tokenizer = std::filesystem::absolute(tok).lexically_normal().string();
  r.run_config = config_ini(cfg);
  return r;
}

ModelRecord model_record_read(const CheckpointState& st, const std::string& where) {
  auto get = [&](const char* key) {
    auto it = st.strings.find(key);
    if (it == st.strings.end())
      throw CheckpointError("checkpoint " + where + " does not record its model (no '" + key + "' attribute)",
                            "it was written by an older ranktune: resume it for one step with this build "
                            "(--train.steps=N+1) and use the new checkpoint");
    return it->second;
  };
  ModelRecord r;
  r.base_identity = get("base_model");
  r.config_json = get("model.config");
  r.base_path = get("model.path");
  r.tokenizer = get("data.tokenizer");
  if (auto it = st.strings.find("config"); it != st.strings.end()) r.run_config = it->second;
  try {
    const nlohmann::json j = nlohmann::json::parse(get("model.lora"));
    r.lora.r = j.at("r").get<int>();
    r.lora.alpha = j.at("alpha").get<double>();
    r.lora.dropout = j.at("dropout").get<double>();
    r.lora.target_modules = j.at("target_modules").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError("checkpoint " + where + ": attribute 'model.lora' is malformed (" + e.what() + ")");
  }
  return r;
}

std::map<std::string, at::Tensor> trained_weights(const CheckpointState& st) {
  std::map<std::string, at::Tensor> out;
  const std::string prefix = kWeights;
  for (const auto& [name, t] : st.tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string param = name.substr(prefix.size());
    const auto master = st.tensors.find(kOptim + param + ".master");
    out[param] = (master != st.tensors.end() ? master->second : t).to(at::kFloat);
  }
  return out;
}

CheckpointState train_state_capture(const NamedTensors& params, const AdamW& opt, const RunPosition& pos,
                                    bool write_replicated, const ModelRecord& record, const c10::Device& device,
                                    const std::vector<int>& other_gpus) {
  CheckpointState st;
  if (write_replicated) {
    for (const auto& item : params) st.tensors[kWeights + item.key()] = item.value().detach();
    for (const auto& item : opt.state()) st.tensors[kOptim + item.key()] = item.value().detach();
  }
  st.ints["optimizer_step"] = pos.step;
  st.ints["tokens_seen"] = pos.tokens;
  st.ints["sampler_epoch"] = pos.cursor.epoch;
  st.ints["sampler_position"] = pos.cursor.position;
  st.strings["base_model"] = record.base_identity;
  st.strings["model.config"] = record.config_json;
  st.strings["model.path"] = record.base_path;
  st.strings["model.lora"] = nlohmann::json{{"r", record.lora.r},
                                            {"alpha", record.lora.alpha},
                                            {"dropout", record.lora.dropout},
                                            {"target_modules", record.lora.target_modules}}
                                 .dump();
  st.strings["data.tokenizer"] = record.tokenizer;
  st.strings["config"] = record.run_config;
  for (auto& [name, blob] : rng_capture(device, other_gpus)) st.blobs[name] = std::move(blob);
  return st;
}

RngBlobs rng_capture(const c10::Device& device, const std::vector<int>& other_gpus) {
  RngBlobs out;
  out["rng.cpu"] = generator_state(at::detail::getDefaultCPUGenerator());
  if (device.is_cuda()) out["rng.cuda"] = generator_state(at::globalContext().defaultGenerator(device));
  for (int g : other_gpus)
    out["rng.cuda_gpu" + std::to_string(g)] =
        generator_state(at::globalContext().defaultGenerator(c10::Device(at::kCUDA, static_cast<c10::DeviceIndex>(g))));
  return out;
}

void rng_set(const RngBlobs& blobs, const c10::Device& device, const std::vector<int>& other_gpus) {
  if (auto it = blobs.find("rng.cpu"); it != blobs.end())
    generator_restore(at::detail::getDefaultCPUGenerator(), it->second);
  if (auto it = blobs.find("rng.cuda"); it != blobs.end() && device.is_cuda())
    generator_restore(at::globalContext().defaultGenerator(device), it->second);
  for (int g : other_gpus)
    if (auto it = blobs.find("rng.cuda_gpu" + std::to_string(g)); it != blobs.end())
      generator_restore(at::globalContext().defaultGenerator(c10::Device(at::kCUDA, static_cast<c10::DeviceIndex>(g))),
                        it->second);
}

void resume_check_config(const LoadedCheckpoint& ck, const Config& cfg) {
  const CheckpointState& src = replicated_source(ck);
  const std::string where = ck.step_dir.string();
  const auto recorded = src.strings.find("config");
  if (recorded == src.strings.end() || recorded->second.empty()) {
    log0() << "resume: " << where << " does not record its settings (written by an older ranktune): changes since "
           << "then are not listed or checked";
    return;
  }
  const std::vector<ConfigChange> changes = config_changes(config_ini_read(recorded->second), cfg);
  std::vector<ConfigChange> refused;
  for (const ConfigChange& c : changes)
    if (!c.refuse.empty()) refused.push_back(c);
  if (!refused.empty()) {
    const auto shown = [](const std::string& v) { return v.empty() ? std::string("\"\"") : v; };
    std::string what = "cannot resume " + where + ":", keep;
    for (const ConfigChange& c : refused) {
      what += (keep.empty() ? " " : "; ") + c.key + " was " + shown(c.saved) + " there, this run sets " + shown(c.now) +
              " (" + c.refuse + ")";
      keep += (keep.empty() ? "--" : " --") + c.key + "=" + c.saved;
    }
    throw ConfigError(what, "resume with " + keep +
                                ", or train anew: another --checkpoint.dir, or --resume=overwrite to move these "
                                "checkpoints aside");
  }
  if (!changes.empty())
    log0() << "resume: settings changed since " << where << ": " << config_changes_describe(changes);
}

RunPosition train_state_restore(const LoadedCheckpoint& ck, const NamedTensors& params, AdamW& opt,
                                const std::string& base_identity, bool require_same_base, const c10::Device& device,
                                const std::vector<int>& other_gpus) {
  const CheckpointState& src = replicated_source(ck);
  const std::string where = ck.step_dir.string();
  auto base = src.strings.find("base_model");
  if (require_same_base && (base == src.strings.end() || !base_identity_same(base->second, base_identity)))
    throw CheckpointError("checkpoint " + where + " was trained on base model '" +
                              (base == src.strings.end() ? std::string("?") : base->second) + "', this run uses '" +
                              base_identity + "'",
                          "resume with the same --model.path, unchanged (and shape/seed for a random base)");
  if (require_same_base && base->second != base_identity)
    log0() << "resume: " << where << " records its base without a tensor index (an older ranktune): only the path "
           << "and config of the base are compared";
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : params) {
      const at::Tensor saved = saved_tensor(src, kWeights + item.key(), where);
      if (saved.sizes() != item.value().sizes())
        throw CheckpointError("checkpoint " + where + ": tensor '" + item.key() + "' has shape " +
                              c10::str(saved.sizes()) + ", the model has " + c10::str(item.value().sizes()));
      item.value().copy_(saved);
    }
  }
  NamedTensors optim;
  for (const auto& [name, t] : src.tensors)
    if (name.rfind(kOptim, 0) == 0) optim.insert(name.substr(std::string(kOptim).size()), t);
  opt.load_state(optim);

  RunPosition pos;
  const CheckpointState& own = ck.has_rank_state ? ck.state : src;
  auto get = [&](const char* key) {
    auto it = own.ints.find(key);
    if (it == own.ints.end()) throw CheckpointError("checkpoint " + where + " lacks '" + key + "'");
    return it->second;
  };
  pos.step = get("optimizer_step");
  pos.tokens = get("tokens_seen");
  pos.cursor = SamplerCursor{get("sampler_epoch"), get("sampler_position")};
  if (ck.has_rank_state) {
    const auto& blobs = ck.state.blobs;
    rng_set(blobs, device, other_gpus);
    const bool cuda = blobs.count("rng.cuda") > 0;
    if (cuda && !device.is_cuda()) {
      log0() << "resume: " << where << " holds CUDA RNG states and this run is on CPU: the CPU generator is "
             << "restored, the CUDA state is unused (a CPU continuation of a GPU run is not bit-identical)";
    } else if (!cuda && device.is_cuda()) {
      log0() << "resume: " << where << " holds no CUDA RNG state (saved by a CPU run): the CUDA generator keeps "
             << "its seed, so GPU dropout draws do not continue a saved sequence";
    }
  }
  return pos;
}

}  // namespace ranktune
