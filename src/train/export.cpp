// Export of a checkpoint to the Hugging Face formats. The PEFT adapter is written straight from the saved tensors
// (our adapter names are PEFT's minus its prefix, lora.h); full models go through llama_save_pretrained. Both get the
// run's tokenizer files; a full model also gets the base's special token ids in config.json and a
// generation_config.json, so that transformers loads, tokenizes and stops generating as it did with the base.
#include "ranktune/train/export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "ranktune/core/config_changes.h"
#include "ranktune/core/error.h"
#include "ranktune/data/byte_tokenizer_files.h"
#include "ranktune/data/tokenizer.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/checkpoint_verify.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/lora.h"
#include "ranktune/model/quantize.h"
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
  // PEFT's adapter_config.json has no field for the base's quantization: the adapter loads on either base, but it
  // was trained to correct the 4-bit one.
  const bool nf4 = trained_model_quantize(tm) == "nf4";
  return "PEFT LoRA adapter (r=" + std::to_string(tm.record.lora.r) + ", " + std::to_string(tensors.size()) +
         " tensors, " + dtype_text(dtype) + ") for " + tm.record.base_path +
         (nf4 ? " (trained over its 4-bit NF4 base: load that with BitsAndBytesConfig(load_in_4bit=True, "
                "bnb_4bit_quant_type=\"nf4\", bnb_4bit_use_double_quant=True))"
              : "");
}

std::string write_model(const TrainedModel& tm, const fs::path& dir, at::ScalarType dtype, bool merge) {
  Llama model = trained_model_build(tm);
  const bool lora = tm.record.lora.r > 0;
  if (lora) lora_merge(*model);
  llama_save_pretrained(*model, dir.string(), dtype);
  std::int64_t count = 0;
  for (const auto& p : model->parameters()) count += p.numel();
  const std::string base = trained_model_quantize(tm) == "nf4" ? "the dequantized NF4 base " : "";
  return std::string("Hugging Face model (") +
         (lora ? "LoRA merged into " + base + tm.record.base_path : "full fine-tune") + ", " + std::to_string(count) +
         " parameters, " + dtype_text(dtype) + ")" + (merge && !lora ? "; export.merge ignored: nothing to merge" : "");
}

// Beside tokenizer.json, what transformers' AutoTokenizer (and vLLM-style loaders) also read: bos/eos/pad and the
// chat template (tokenizer_config.json, special_tokens_map.json, chat_template.jinja), and the SentencePiece model of
// a slow tokenizer. tokenizer_config.json is the one ranktune itself read beside any tokenizer file; the others are
// taken only from a Hugging Face directory (a file named tokenizer.json), where they belong to the same tokenizer.
constexpr const char* kTokenizerSidecars[] = {"tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                                              "tokenizer.model"};

void copy_into(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  const fs::path tmp = to.string() + tmp_suffix();
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) throw CheckpointError("cannot copy " + from.string() + " to " + to.string() + ": " + ec.message());
  file_commit(tmp, to);
}

// The run's tokenizer.json (a directory spec names the file inside it), or "" for the byte tokenizer.
fs::path run_tokenizer_file(const ModelRecord& r) {
  if (r.tokenizer.empty()) return {};
  std::error_code ec;
  return fs::is_directory(r.tokenizer, ec) ? fs::path(r.tokenizer) / "tokenizer.json" : fs::path(r.tokenizer);
}

// The tokenizer files next to the weights. A byte-tokenizer run gets that tokenizer written as HF files
// (data/byte_tokenizer_files.h), so its export tokenizes in transformers as it did in training.
std::string write_tokenizer_files(const ModelRecord& r, const fs::path& dir) {
  if (r.tokenizer.empty()) {
    file_write_atomic(dir / "tokenizer.json", byte_tokenizer_json());
    file_write_atomic(dir / "tokenizer_config.json", byte_tokenizer_config_json());
    file_write_atomic(dir / "special_tokens_map.json", byte_special_tokens_map_json());
    return "; the byte tokenizer as tokenizer.json, tokenizer_config.json, special_tokens_map.json";
  }
  const fs::path file = run_tokenizer_file(r);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    return "; WARNING: the run's tokenizer " + file.string() + " no longer exists, copy it by hand";
  copy_into(file, dir / "tokenizer.json");
  std::string copied = "tokenizer.json";
  for (const char* name : kTokenizerSidecars) {
    const fs::path side = file.parent_path() / name;
    const bool hf_dir = file.filename() == "tokenizer.json";
    if ((hf_dir || std::string(name) == "tokenizer_config.json") && fs::is_regular_file(side, ec)) {
      copy_into(side, dir / name);
      copied += std::string(", ") + name;
    }
  }
  return "; " + copied + " from " + file.parent_path().string();
}

nlohmann::ordered_json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return nlohmann::ordered_json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// bos/eos/pad ids for config.json and generation_config.json: the base config.json's where it has the key (null
// included: the base said so), else the run's tokenizer's. A byte-tokenizer run over a pretrained base trained the
// byte ids, so those are what its export must stop on.
nlohmann::ordered_json special_ids(const ModelRecord& r, std::string& from) {
  nlohmann::ordered_json ids = nlohmann::ordered_json::object();
  const char* keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
  std::vector<std::string> sources;
  if (!r.base_path.empty() && !r.tokenizer.empty()) {
    const nlohmann::ordered_json base = read_json_file(fs::path(r.base_path) / "config.json");
    if (base.is_object())
      for (const char* k : keys)
        if (base.contains(k)) ids[k] = base.at(k);
    if (!ids.empty()) sources.push_back(r.base_path + "/config.json");
  }
  if (ids.size() < 3) {
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = tokenizer_load(r.tokenizer.empty() ? "byte" : run_tokenizer_file(r).string());
    } catch (const std::exception&) {
      // the copy above already warned that the tokenizer is gone
    }
    if (tok) {
      const std::optional<std::int32_t> have[] = {tok->bos_id(), tok->eos_id(), tok->pad_id()};
      bool used = false;
      for (int i = 0; i < 3; ++i)
        if (!ids.contains(keys[i]) && have[i]) {
          ids[keys[i]] = *have[i];
          used = true;
        }
      if (used) sources.push_back(r.tokenizer.empty() ? "the byte tokenizer" : "the tokenizer");
    }
  }
  for (const auto& src : sources) from += (from.empty() ? "" : " and ") + src;
  return ids;
}

// config.json as llama_save_pretrained wrote it, plus the special ids; generation_config.json copied from the base,
// or written from those ids, so that HF generate stops where the run's own generation stops.
std::string write_generation_files(const ModelRecord& r, const fs::path& dir) {
  std::string from;
  const nlohmann::ordered_json ids = special_ids(r, from);
  nlohmann::ordered_json config = read_json_file(dir / "config.json");
  if (!config.is_object()) throw CheckpointError("cannot read back " + (dir / "config.json").string());
  for (const auto& [k, v] : ids.items()) config[k] = v;
  file_write_atomic(dir / "config.json", config.dump(2) + "\n");
  std::string what = "; special token ids from " + (from.empty() ? std::string("nowhere (none known)") : from);
  const fs::path base_generation = fs::path(r.base_path) / "generation_config.json";
  std::error_code ec;
  if (!r.base_path.empty() && !r.tokenizer.empty() && fs::is_regular_file(base_generation, ec)) {
    copy_into(base_generation, dir / "generation_config.json");
    return what + "; generation_config.json from " + r.base_path;
  }
  nlohmann::ordered_json gen = nlohmann::ordered_json::object();
  for (const auto& [k, v] : ids.items())
    if (!v.is_null()) gen[k] = v;
  file_write_atomic(dir / "generation_config.json", gen.dump(2) + "\n");
  return what + "; generation_config.json written with them";
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
  tm.run = config_ini_read(tm.record.run_config);
  tm.weights = trained_weights(st);
  tm.trained_on_gpu = st.blobs.count("rng.cuda") > 0;
  if (tm.weights.empty())
    throw CheckpointError("checkpoint " + report.step_dir.string() + " holds no weights in rank 0's file",
                          "it was not written by `ranktune train`");
  return tm;
}

std::string trained_model_quantize(const TrainedModel& tm) {
  const auto it = tm.run.find("model.quantize");
  return it == tm.run.end() ? "none" : it->second;
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
    // QLoRA: the adapters learned to correct the rounded base, so the base is rounded again as the run rounded it.
    const Quantize q = quantize_parse(trained_model_quantize(tm));
    const auto precision = tm.run.find("train.precision");
    const at::ScalarType held = llama_dtype(tm.trained_on_gpu ? at::Device(at::kCUDA) : at::Device(at::kCPU),
                                            precision == tm.run.end() ? std::string("auto") : precision->second);
    model = llama_from_pretrained_quantized(tm.record.base_path, fp32, q, held);
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
    const bool adapter = tm.record.lora.r > 0 && !o.merge;
    result.what = adapter ? write_adapter(tm, tmp, o.dtype) : write_model(tm, tmp, o.dtype, o.merge);
    result.what += write_tokenizer_files(tm.record, tmp);
    if (!adapter) result.what += write_generation_files(tm.record, tmp);
    install(tmp, out);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  return result;
}

}  // namespace ranktune
