// `ranktune generate [PATH] --generate.prompt=TEXT`: what a run learned, in words. PATH is a checkpoint (a step
// directory or a checkpoint root: its `latest`) or a Hugging Face model directory; without PATH, the newest checkpoint
// under checkpoint.dir of the config, else model.path. The checkpoint's model is rebuilt as the run held it (full
// weights, or the base + LoRA adapters) and the prompt is continued greedily (temperature 0) or sampled with
// temperature and top-p from the run's seed. The prompt is generate.prompt or the text of generate.prompt_file; it
// gets the tokenizer's bos unless it starts with one. One process (rank 0's output only under a launcher).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ranktune/app/commands.h"
#include "ranktune/app/tokenizer_choice.h"
#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/data/tokenizer.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/model/bnb_checkpoint.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/quantize.h"
#include "ranktune/train/export.h"
#include "ranktune/train/generate.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

struct Source {
  Llama model{nullptr};
  TokenizerChoice tokenizer;  // a model directory: data.tokenizer (auto: the directory's own); a checkpoint: its run's
  std::string what;           // for the log
};

Source load_source(const Config& cfg, const std::vector<std::string>& args) {
  std::string path = args.empty() ? std::string() : args.front();
  if (path.empty()) {
    if (fs::exists(fs::path(cfg.checkpoint.dir) / "latest")) path = cfg.checkpoint.dir;
    else if (!cfg.model.path.empty()) path = cfg.model.path;
    else
      throw UsageError("nothing to generate from: no checkpoint under checkpoint.dir (" + cfg.checkpoint.dir +
                           ") and no model.path",
                       "ranktune generate CHECKPOINT_OR_MODEL_DIR --generate.prompt=\"...\" (or the training run's "
                       "--config, after it saved a checkpoint)");
  }
  if (!fs::exists(path))
    throw UsageError("'" + path + "' does not exist",
                     "give a checkpoint (step directory or root) or a model directory");
  Source s;
  if (fs::exists(fs::path(path) / "config.json") && !fs::exists(fs::path(path) / "manifest.json")) {
    // A "...-bnb-4bit" directory is its 4-bit weights: loaded as stored (model/quantize.h), never dequantized here.
    const bool nf4 = hf_model_dir_is_bnb_nf4(path);
    s.model = llama_from_pretrained_quantized(path, at::TensorOptions().dtype(at::kFloat),
                                              nf4 ? Quantize::nf4 : Quantize::none);
    s.tokenizer = tokenizer_choose(cfg.data.tokenizer, path);
    s.what = "model directory " + path + (nf4 ? " (bitsandbytes 4-bit NF4)" : "");
    return s;
  }
  const TrainedModel tm = trained_model_read(path, h5::file_locking_parse(cfg.checkpoint.file_locking));
  s.model = trained_model_build(tm);
  s.tokenizer.spec = tm.record.tokenizer.empty() ? "byte" : tm.record.tokenizer;
  s.tokenizer.origin = "the one its run trained with";
  s.what = "checkpoint " + tm.step_dir.string() + " (step " + std::to_string(tm.step) +
           (tm.record.lora.r > 0
                ? ", LoRA r=" + std::to_string(tm.record.lora.r) + " on " +
                      (trained_model_quantize(tm) == "nf4" ? "the 4-bit NF4 " : "") + tm.record.base_path
                : std::string(", full weights")) +
           ")";
  return s;
}

// generate.prompt_file's text exactly as the file holds it: a rendered chat template ends where its author ended it.
std::string prompt_file_read(const std::string& path) {
  if (fs::is_directory(path))
    throw UsageError("generate.prompt_file '" + path + "' is a directory", "give the path of a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw UsageError("generate.prompt_file '" + path + "' cannot be read: " + std::strerror(errno),
                     "give the path of a text file");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int cmd_generate(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  const GenerateConfig& g = cfg.generate;
  agree_run(ctx.env, [&] {
    if (ctx.env.size() > 1)
      throw UsageError("`ranktune generate` runs in one process, but " + std::to_string(ctx.env.size()) +
                           " were started",
                       "run it without mpirun/srun");
    if (ctx.request.args.size() > 1)
      throw UsageError("`ranktune generate` takes at most one path", "ranktune generate [CHECKPOINT_OR_MODEL_DIR]");
    if (!g.prompt.empty() && !g.prompt_file.empty())
      throw UsageError("generate.prompt and generate.prompt_file are both given", "give one of them");
    if (g.prompt.empty() && g.prompt_file.empty())
      throw UsageError("no prompt: generate.prompt and generate.prompt_file are empty",
                       "add --generate.prompt=\"Once upon a time\" or --generate.prompt_file=PATH");
  });
  std::string prompt_text = g.prompt;
  agree_run(ctx.env, [&] {
    if (!g.prompt_file.empty()) prompt_text = prompt_file_read(g.prompt_file);
    if (prompt_text.empty())
      throw UsageError("generate.prompt_file '" + g.prompt_file + "' is empty", "write the prompt into it");
    if (cfg.device == "cuda" && !at::hasCUDA())
      throw NoGpuError("device=cuda but no GPU is visible to generate on",
                       "--device=auto (the CPU when no GPU is visible) or --device=cpu");
  });
  Source src;
  std::unique_ptr<Tokenizer> tok;
  agree_run(ctx.env, [&] {
    src = load_source(cfg, ctx.request.args);
    tok = tokenizer_open(src.tokenizer);
    if (tok->vocab_size() > src.model->config().vocab_size)
      throw ConfigError("tokenizer " + tok->describe() + " has " + std::to_string(tok->vocab_size()) +
                            " tokens but the model's vocabulary holds " +
                            std::to_string(src.model->config().vocab_size),
                        "use the tokenizer the model was trained with (--data.tokenizer)");
  });
  const bool cuda = cfg.device == "cuda" || (cfg.device == "auto" && at::hasCUDA());
  // Placing the model and decoding run inside agree_run as well: a device out of memory there ends as exit 7 with
  // the allocator's first sentences and a hint, like loading does, not as an internal error.
  agree_run(ctx.env, [&] {
    if (cuda) src.model->to(at::Device(at::kCUDA, 0), at::kBFloat16);
  });
  src.model->eval();
  char sampling[96] = "greedy";
  if (g.temperature > 0)
    std::snprintf(sampling, sizeof sampling, "temperature %.2f, top-p %.2f, seed %ld", g.temperature, g.top_p,
                  cfg.seed);
  log0() << "generate: " << src.what << ", tokenizer " << tok->describe() << ", on " << (cuda ? "cuda:0 (bf16)" : "cpu")
         << (cfg.device == "auto" && !cuda ? " (device=auto: no GPU visible)" : "") << ", " << sampling;
  const std::vector<std::int32_t> prompt = prompt_encode(*tok, prompt_text);
  GenerateOptions o;
  o.max_new_tokens = g.max_new_tokens;
  o.temperature = g.temperature;
  o.top_p = g.top_p;
  o.seed = static_cast<std::uint64_t>(cfg.seed);
  o.stop_token = tok->eos_id().value_or(-1);
  o.vocab_limit = tok->vocab_size();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::int32_t> out;
  agree_run(ctx.env, [&] {
    at::NoGradGuard no_grad;
    out = generate(*src.model, prompt, o);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log0() << prompt_text << tok->decode(out);
  char line[160];
  std::snprintf(line, sizeof line, "generated %zu tokens after a %zu-token prompt in %.2f s", out.size(), prompt.size(),
                s);
  log0() << line;
  return 0;
}

}  // namespace ranktune
