// Export of a checkpoint to the Hugging Face formats. The PEFT adapter is written straight from the saved tensors
// (our adapter names are PEFT's minus its prefix, lora.h); full models go through llama_save_pretrained.
#include "ranktune/train/export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "ranktune/core/error.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/checkpoint_verify.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

const char* dtype_text(at::ScalarType t) { return t == at::kBFloat16 ? "bf16" : t == at::kHalf ? "fp16" : "fp32"; }

bool is_adapter(const std::string& name) { return name.find(".lora_") != std::string::npos; }

// The directory the export is renamed to, normalised so that "out/" names "out".
fs::path export_target(const fs::path& out_dir) {
  fs::path p = fs::absolute(out_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

void check_target(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  if (!fs::is_directory(out, ec))
    throw UsageError("export target " + out.string() + " exists and is not a directory", "choose another OUT_DIR");
  if (!fs::is_empty(out, ec) && !overwrite)
    throw UsageError("export target " + out.string() + " exists and is not empty",
                     "choose another OUT_DIR, or replace it with --export.overwrite=true");
}

// An adapter is only usable with its base, so a LoRA run over a random initialisation cannot be exported.
void require_base_dir(const TrainedModel& tm) {
  if (tm.record.base_path.empty())
    throw ConfigError("checkpoint " + tm.step_dir.string() + " holds LoRA adapters over a randomly initialised base (" +
                          tm.record.base_identity + "), which no model directory holds",
                      "to export, train LoRA over a model directory (--model.path), or train the whole model "
                      "(lora.r=0)");
}

std::string adapter_config_json(const ModelRecord& r) {
  nlohmann::ordered_json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = r.base_path;
  j["r"] = r.lora.r;
  // PEFT writes an integral alpha as an int; keep the float only when it has a fraction.
  if (r.lora.alpha == std::floor(r.lora.alpha)) j["lora_alpha"] = static_cast<std::int64_t>(r.lora.alpha);
  else j["lora_alpha"] = r.lora.alpha;
  j["lora_dropout"] = r.lora.dropout;
  j["target_modules"] = lora_target_modules(r.lora.target_modules);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["use_rslora"] = false;
  j["use_dora"] = false;
  j["init_lora_weights"] = true;
  j["inference_mode"] = true;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["rank_pattern"] = nlohmann::ordered_json::object();
  j["alpha_pattern"] = nlohmann::ordered_json::object();
  return j.dump(2) + "\n";
}

std::string write_adapter(const TrainedModel& tm, const fs::path& dir, at::ScalarType dtype) {
  require_base_dir(tm);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : tm.weights) {
    if (!is_adapter(name))
      throw CheckpointError("checkpoint " + tm.step_dir.string() + " records lora.r=" +
                            std::to_string(tm.record.lora.r) + " but holds the non-adapter tensor " + name);
    tensors.emplace_back(lora_peft_name(name), t.to(dtype));
  }
  file_write_atomic(dir / "adapter_config.json", adapter_config_json(tm.record));
  safetensors_save((dir / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  return "PEFT LoRA adapter (r=" + std::to_string(tm.record.lora.r) + ", " + std::to_string(tensors.size()) +
         " tensors, " + dtype_text(dtype) + ") for " + tm.record.base_path;
}

std::string write_model(const TrainedModel& tm, const fs::path& dir, at::ScalarType dtype, bool merge) {
  Llama model = trained_model_build(tm);
  const bool lora = tm.record.lora.r > 0;
  if (lora) lora_merge(*model);
  llama_save_pretrained(*model, dir.string(), dtype);
  std::int64_t count = 0;
  for (const auto& p : model->parameters()) count += p.numel();
  return std::string("Hugging Face model (") + (lora ? "LoRA merged into " + tm.record.base_path : "full fine-tune") +
         ", " + std::to_string(count) + " parameters, " + dtype_text(dtype) + ")" +
         (merge && !lora ? "; export.merge ignored: nothing to merge" : "");
}

// A run with a tokenizer.json gets it next to the weights, as transformers' AutoTokenizer expects.
std::string copy_tokenizer(const ModelRecord& r, const fs::path& dir) {
  if (r.tokenizer.empty()) return "";
  std::error_code ec;
  if (!fs::is_regular_file(r.tokenizer, ec))
    return "; WARNING: the run's tokenizer " + r.tokenizer + " no longer exists, copy it by hand";
  const fs::path tmp = dir / ("tokenizer.json" + tmp_suffix());
  fs::copy_file(r.tokenizer, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) throw CheckpointError("cannot copy " + r.tokenizer + " to " + dir.string() + ": " + ec.message());
  file_commit(tmp, dir / "tokenizer.json");
  return "; tokenizer.json from " + r.tokenizer;
}

// Moves the finished temporary directory to `out`, replacing what is there (an empty or overwritable directory).
void install(const fs::path& tmp, const fs::path& out) {
  const auto move = [](const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::rename(from, to, ec);
    if (ec) throw CheckpointError("cannot rename " + from.string() + " to " + to.string() + ": " + ec.message());
  };
  fsync_dir(tmp);
  std::error_code ec;
  fs::path old;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) {
    old = out.string() + ".old" + tmp_suffix();
    move(out, old);
  }
  move(tmp, out);
  fsync_dir(out.parent_path());
  if (!old.empty()) remove_tree(old);
}

}  // namespace

TrainedModel trained_model_read(const fs::path& checkpoint, h5::FileLocking locking) {
  const VerifyReport report = checkpoint_verify(checkpoint, locking);
  if (!report.ok()) {
    std::string what = "cannot export " + checkpoint.string() + ": " + report.problems.front();
    if (report.problems.size() > 1) what += " (and " + std::to_string(report.problems.size() - 1) + " more problem(s))";
    throw CheckpointError(what, report.step_dir.empty()
                                    ? "give a step directory (step_00000100) or a checkpoint root holding `latest`"
                                    : "`ranktune checkpoint verify " + checkpoint.string() +
                                          "` lists every problem; export another step");
  }
  TrainedModel tm;
  tm.step_dir = report.step_dir;
  tm.step = report.manifest->step;
  const CheckpointState st = checkpoint_file_load(report.step_dir, *report.manifest, 0, locking);
  tm.record = model_record_read(st, report.step_dir.string());
  tm.weights = trained_weights(st);
  if (tm.weights.empty())
    throw CheckpointError("checkpoint " + report.step_dir.string() + " holds no weights in rank 0's file",
                          "it was not written by `ranktune train`");
  return tm;
}

Llama trained_model_build(const TrainedModel& tm) {
  const std::string where = tm.step_dir.string();
  const at::TensorOptions fp32 = at::TensorOptions().dtype(at::kFloat);
  const bool lora = tm.record.lora.r > 0;
  Llama model{nullptr};
  if (!lora) {
    model = Llama(llama_config_from_json(tm.record.config_json, where + " (attribute model.config)"), fp32);
  } else {
    require_base_dir(tm);
    model = llama_from_pretrained(tm.record.base_path, fp32);
    if (llama_config_to_json(model->config()) != tm.record.config_json)
      throw CheckpointError("the base model " + tm.record.base_path + " no longer matches the config.json that " +
                                where + " was trained on",
                            "put the original base model back at that path");
    lora_apply(*model, tm.record.lora, /*seed=*/0);
  }
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (lora && !is_adapter(item.key())) continue;
    const auto it = tm.weights.find(item.key());
    if (it == tm.weights.end())
      throw CheckpointError("checkpoint " + where + " lacks the trained tensor " + item.key(),
                            "it does not match its recorded model (model.config, model.lora)");
    if (it->second.sizes() != item.value().sizes())
      throw CheckpointError("checkpoint " + where + ": tensor " + item.key() + " has shape " +
                            c10::str(it->second.sizes()) + ", its recorded model has " +
                            c10::str(item.value().sizes()));
    item.value().copy_(it->second);
    used.insert(item.key());
  }
  for (const auto& [name, t] : tm.weights)
    if (!used.count(name))
      throw CheckpointError("checkpoint " + where + " holds " + name + ", which its recorded model has no place for");
  model->eval();
  return model;
}

ExportResult checkpoint_export(const fs::path& checkpoint, const fs::path& out_dir, const ExportOptions& o) {
  const fs::path out = export_target(out_dir);
  check_target(out, o.overwrite);
  const TrainedModel tm = trained_model_read(checkpoint, o.locking);
  ExportResult result{tm.step, tm.step_dir, ""};

  const fs::path tmp = out.string() + ".tmp" + tmp_suffix();
  remove_tree(tmp);
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec)
    throw CheckpointError("cannot create " + tmp.string() + ": " + ec.message(), "check the path and permissions");
  try {
    result.what = tm.record.lora.r > 0 && !o.merge ? write_adapter(tm, tmp, o.dtype)
                                                   : write_model(tm, tmp, o.dtype, o.merge);
    result.what += copy_tokenizer(tm.record, tmp);
    install(tmp, out);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  return result;
}

}  // namespace ranktune
