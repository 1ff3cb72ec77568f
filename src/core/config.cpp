// The config schema (one line per key), value conversion with precise errors, validation, hashing and the table.
#include "ranktune/core/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/core/hash.h"

namespace ranktune {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

[[noreturn]] void bad_value(std::string_view key, std::string_view text, std::string_view want) {
  throw ConfigError("bad value '" + std::string(text) + "' for " + std::string(key) + ": expected " +
                    std::string(want));
}

template <class T>
T parse_number(std::string_view key, std::string_view text) {
  T v{};
  const char* b = text.data();
  const char* e = b + text.size();
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p != e || text.empty()) {
    bad_value(key, text, std::is_floating_point_v<T> ? "a number" : "an integer");
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) bad_value(key, text, "a finite number");
  }
  return v;
}

bool parse_bool(std::string_view key, std::string_view text) {
  const std::string t = lower(text);
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  bad_value(key, text, "true or false");
}

std::string show_double(double v) {
  std::ostringstream os;
  os << std::setprecision(10) << v;
  return os.str();
}

// A key bound to a member of a member of Config (e.g. &Config::train, &TrainConfig::lr) or of Config itself.
template <class T>
ConfigKey make_key(std::string name, std::string help, std::function<T&(Config&)> ref,
                   std::vector<std::string> choices = {}) {
  ConfigKey k;
  k.name = name;
  k.help = std::move(help);
  if (!choices.empty()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
    k.help += " (" + list + ")";
  }
  k.parse = [name, ref, choices](Config& c, std::string_view text) {
    T& field = ref(c);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!choices.empty() && std::find(choices.begin(), choices.end(), std::string(text)) == choices.end()) {
        std::string list;
        for (const auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
        bad_value(name, text, "one of " + list);
      }
      field = std::string(text);
    } else if constexpr (std::is_same_v<T, bool>) {
      field = parse_bool(name, text);
    } else {
      field = parse_number<T>(name, text);
    }
  };
  k.show = [ref](const Config& c) {
    T& field = ref(const_cast<Config&>(c));
    if constexpr (std::is_same_v<T, std::string>) return field;
    else if constexpr (std::is_same_v<T, bool>) return std::string(field ? "true" : "false");
    else if constexpr (std::is_floating_point_v<T>) return show_double(field);
    else return std::to_string(field);
  };
  return k;
}

#define RT_KEY(type, name, expr, help, ...) \
  make_key<type>(name, help, [](Config& c) -> type& { return c.expr; } __VA_OPT__(, ) __VA_ARGS__)

std::vector<ConfigKey> build_schema() {
  using S = std::string;
  using V = std::vector<std::string>;
  return {
      RT_KEY(S, "device", device,
             "where tensors live: auto (a GPU when one is visible, else the CPU), cuda (a GPU or an error), cpu",
             V{"auto", "cuda", "cpu"}),
      RT_KEY(long, "seed", seed, "seed for initialisation, data order and dropout"),
      RT_KEY(S, "resume", resume,
             "none (refused if checkpoint.dir holds checkpoints), overwrite (move them aside, start fresh), auto "
             "(newest verified checkpoint) or a checkpoint path"),
      RT_KEY(S, "output_dir", output_dir, "run directory: metrics, logs, exports"),

      RT_KEY(S, "parallel.mode", parallel.mode, "parallel strategy", V{"auto", "single", "ddp", "balanced"}),
      RT_KEY(double, "parallel.comm_timeout_s", parallel.comm_timeout_s, "abort a collective after this many seconds"),
      RT_KEY(S, "parallel.max_memory", parallel.max_memory, "balanced: per-GPU budget, e.g. 0:70GiB,1:75GiB"),
      RT_KEY(double, "parallel.reserve_gib", parallel.reserve_gib, "GiB kept free on every GPU"),
      RT_KEY(int, "parallel.micro_batches", parallel.micro_batches, "balanced: micro-batches pipelined per step"),
      RT_KEY(int, "parallel.stages", parallel.stages, "balanced: pipeline stages; 0 = one per GPU (CPU: 1)"),
      RT_KEY(S, "parallel.stage_threads", parallel.stage_threads,
             "balanced: a host thread per stage; auto = when the stages span several GPUs", V{"auto", "on", "off"}),
      RT_KEY(double, "parallel.bucket_mb", parallel.bucket_mb, "DDP gradient bucket size in MB"),

      RT_KEY(S, "model.path", model.path, "Hugging Face model directory; empty = random init from the shape keys"),
      RT_KEY(int, "model.hidden_size", model.hidden_size, "hidden size d"),
      RT_KEY(int, "model.num_layers", model.num_layers, "decoder layers"),
      RT_KEY(int, "model.num_heads", model.num_heads, "attention heads"),
      RT_KEY(int, "model.num_kv_heads", model.num_kv_heads, "key/value heads (GQA)"),
      RT_KEY(int, "model.intermediate_size", model.intermediate_size, "SwiGLU hidden size"),
      RT_KEY(int, "model.vocab_size", model.vocab_size, "vocabulary size"),
      RT_KEY(int, "model.max_seq_len", model.max_seq_len, "longest sequence the rotary tables cover"),
      RT_KEY(double, "model.rope_theta", model.rope_theta, "rotary base"),
      RT_KEY(double, "model.rms_norm_eps", model.rms_norm_eps, "RMSNorm epsilon"),
      RT_KEY(bool, "model.tie_embeddings", model.tie_embeddings, "lm_head shares the embedding matrix"),
      RT_KEY(S, "model.quantize", model.quantize,
             "frozen base linears: none (16-bit) or nf4 (4-bit QLoRA, bitsandbytes' format; needs lora.r > 0)",
             V{"none", "nf4"}),

      RT_KEY(int, "lora.r", lora.r, "LoRA rank lora_r; 0 = full fine-tune"),
      RT_KEY(double, "lora.alpha", lora.alpha, "LoRA alpha (scale alpha/r)"),
      RT_KEY(double, "lora.dropout", lora.dropout, "dropout on the LoRA input"),
      RT_KEY(S, "lora.target_modules", lora.target_modules, "comma list of q,k,v,o,gate,up,down"),

      RT_KEY(long, "train.steps", train.steps, "optimizer steps"),
      RT_KEY(double, "train.epochs", train.epochs, "passes over the training rows; > 0 replaces train.steps"),
      RT_KEY(int, "train.micro_batch", train.micro_batch, "sequences per micro-batch per rank"),
      RT_KEY(int, "train.grad_accum", train.grad_accum, "micro-batches accumulated per step"),
      RT_KEY(int, "train.seq_len", train.seq_len, "tokens per sequence"),
      RT_KEY(double, "train.lr", train.lr, "peak learning rate"),
      RT_KEY(double, "train.min_lr_ratio", train.min_lr_ratio, "final lr as a fraction of the peak"),
      RT_KEY(long, "train.warmup_steps", train.warmup_steps, "linear warm-up steps"),
      RT_KEY(S, "train.schedule", train.schedule, "lr decay after warm-up", V{"cosine", "linear", "constant"}),
      RT_KEY(double, "train.weight_decay", train.weight_decay, "AdamW weight decay (matrices only)"),
      RT_KEY(double, "train.beta1", train.beta1, "AdamW beta1"),
      RT_KEY(double, "train.beta2", train.beta2, "AdamW beta2"),
      RT_KEY(double, "train.eps", train.eps, "AdamW epsilon"),
      RT_KEY(double, "train.grad_clip", train.grad_clip, "clip the global gradient norm; 0 = off"),
      RT_KEY(bool, "train.activation_checkpointing", train.activation_checkpointing,
             "recompute activations in backward"),
      RT_KEY(long, "train.activation_checkpointing_layers", train.activation_checkpointing_layers,
             "with activation checkpointing: how many decoder layers recompute, spread evenly over the model (half: "
             "every second one); the others keep their activations: less recomputation, more memory (`ranktune plan` "
             "prints the footprint of each choice). 0 = every layer"),
      RT_KEY(bool, "train.activation_offload", train.activation_offload,
             "with activation checkpointing: keep each layer's saved input in pinned host memory until its backward "
             "(tokens x hidden x 2 bytes per layer moved off the GPU; a copy each way per layer)"),
      RT_KEY(
          double, "train.activation_offload_host_gib", train.activation_offload_host_gib,
          "with train.activation_offload: the most pinned host memory the offloaded inputs of a rank hold at once; "
          "inputs past it stay on the GPU. 0 = 80% of the host memory available once the model is built (MemAvailable "
          "or the cgroup's limit), shared among the node's ranks"),
      RT_KEY(long, "train.mlp_chunk_tokens", train.mlp_chunk_tokens,
             "run every layer's MLP in slices of this many tokens when a micro-batch holds more (its intermediate-wide "
             "tensors then exist for one slice at a time: long sequences; one more MLP forward a step without "
             "activation checkpointing); 0 = whole"),
      RT_KEY(S, "train.precision", train.precision, "compute precision", V{"auto", "bf16", "fp32"}),
      RT_KEY(bool, "train.flash_varlen", train.flash_varlen,
             "GPU, data.packing_attention=isolated: the flash kernel's variable-length form instead of a T x T mask "
             "(as fast as unmasked rows; false: the mask and the memory-efficient kernel)"),
      RT_KEY(S, "train.kernels", train.kernels,
             "fused (on GPU RMSNorm's, RoPE's and the fused loss's softmax kernels; the LoRA fast path everywhere) or "
             "eager (the unfused reference ops, transformers' and PEFT's order: a fallback and the comparison)",
             V{"fused", "eager"}),
      RT_KEY(bool, "train.fp8_matmuls", train.fp8_matmuls,
             "LoRA over a 16-bit base: the frozen base's matmuls (x W^T forward, dY W backward) in FP8 e4m3 with one "
             "scale per row (token, weight row or column), quantized in each call; GPUs of compute capability 8.9+ "
             "(Ada, Hopper), emulated in fp32 on CPU. Rounds the base's inputs and outputs to FP8 precision (export "
             "and generate keep the 16-bit base)"),
      RT_KEY(S, "train.fused_loss", train.fused_loss,
             "chunked linear cross entropy that never holds the full logits: auto = on GPU only (CPU keeps the "
             "reference's exact loss bits), true, false",
             V{"auto", "true", "false"}),
      RT_KEY(bool, "train.adamw_one_pass", train.adamw_one_pass,
             "bf16/fp16 parameters (full fine-tuning) step in one pass that reads the low-precision gradient and "
             "writes the parameter with its fp32 master and moments (kernels/adamw.h; on a GPU bit for bit the "
             "reference's result); false: an fp32 copy of each gradient, at::_fused_adamw_ on the masters, a copy back "
             "(the reference)"),
      RT_KEY(bool, "train.queue_ahead", train.queue_ahead,
             "queue the next step's forward and backward before this step's loss and gradient norm are read, so "
             "the GPU never waits for the host between steps (not before an evaluation, a save or the last step, nor "
             "in balanced mode; results are bit-identical); false: each step's loss is read before the next starts"),
      RT_KEY(long, "train.eval_every", train.eval_every, "evaluate every N steps; 0 = never"),
      RT_KEY(long, "train.log_every", train.log_every, "print a log line every N steps"),
      RT_KEY(long, "train.profile_steps", train.profile_steps,
             "profile N steps (LibTorch Kineto) into output_dir: profile_trace.json and the per-kernel table "
             "profile_kernels.md; 0 = off"),
      RT_KEY(long, "train.profile_skip", train.profile_skip, "warm-up steps of this run before the profiled ones"),

      RT_KEY(S, "data.path", data.path,
             "text/JSONL files (comma list) or a prepared .h5 / shard directory; empty = the generated corpus"),
      RT_KEY(S, "data.tokenizer", data.tokenizer,
             "auto (model.path's tokenizer.json; byte without model.path), byte, or a tokenizer.json path"),
      RT_KEY(double, "data.val_fraction", data.val_fraction, "held-out fraction for evaluation (the last rows)"),
      RT_KEY(S, "data.on_bad_record", data.on_bad_record, "a malformed record: error, or skip and count it",
             V{"error", "skip"}),
      RT_KEY(S, "data.overlong", data.overlong, "a document longer than a row", V{"split", "truncate"}),
      RT_KEY(S, "data.packing", data.packing, "documents: a new row rather than cut one; fill: fill every row",
             V{"documents", "fill"}),
      RT_KEY(S, "data.packing_attention", data.packing_attention,
             "isolated: a packed document attends only to itself; shared: also to the earlier ones in its row",
             V{"isolated", "shared"}),
      RT_KEY(S, "data.chat_template", data.chat_template,
             "format of messages records: auto = the model's own template (tokenizer_config.json), template = "
             "insist on it, or a built-in family",
             V{"auto", "template", "llama3", "llama2", "mistral", "chatml", "plain"}),

      RT_KEY(S, "prepare.output", prepare.output, "prepare: output OUT.h5, or a directory when shard_rows > 0"),
      RT_KEY(long, "prepare.shard_rows", prepare.shard_rows, "prepare: rows per shard file; 0 = one file"),
      RT_KEY(int, "prepare.threads", prepare.threads,
             "prepare: threads per rank that parse and tokenize records, beside one that packs and writes the rows "
             "(the output is the same for any number of threads and ranks); 0 = the CPUs this rank may use, or "
             "OMP_NUM_THREADS when set"),

      RT_KEY(S, "checkpoint.dir", checkpoint.dir, "checkpoint directory; empty = <output_dir>/checkpoints"),
      RT_KEY(long, "checkpoint.every_steps", checkpoint.every_steps, "save every N steps; 0 = end and preemption only"),
      RT_KEY(bool, "checkpoint.at_end", checkpoint.at_end, "save after the last step (a stop signal always saves)"),
      RT_KEY(int, "checkpoint.keep", checkpoint.keep, "committed checkpoints kept"),
      RT_KEY(S, "checkpoint.file_locking", checkpoint.file_locking, "HDF5 file locking",
             V{"best-effort", "true", "false"}),
      RT_KEY(bool, "checkpoint.async", checkpoint.async,
             "periodic saves: copy the state to host memory, write and commit it while training goes on (one extra "
             "host copy of the saved state; synchronous when the node lacks the memory)"),

      RT_KEY(S, "generate.prompt", generate.prompt, "text to continue (ranktune generate)"),
      RT_KEY(S, "generate.prompt_file", generate.prompt_file,
             "file whose whole text (as is, a final newline included) is the prompt, instead of generate.prompt"),
      RT_KEY(int, "generate.max_new_tokens", generate.max_new_tokens, "tokens to generate"),
      RT_KEY(double, "generate.temperature", generate.temperature, "0 = greedy; > 0 samples"),
      RT_KEY(double, "generate.top_p", generate.top_p,
             "nucleus sampling: keep the smallest set of tokens with this mass"),
      RT_KEY(S, "export.format", export_.format,
             "hf: a Hugging Face model or PEFT adapter directory; gguf: one llama.cpp/Ollama file (LoRA merged)",
             V{"hf", "gguf"}),
      RT_KEY(S, "export.dtype", export_.dtype, "dtype of the exported weights (q8_0: gguf only)",
             V{"bf16", "fp16", "fp32", "q8_0"}),
      RT_KEY(bool, "export.merge", export_.merge, "LoRA: write the merged full model instead of the adapter"),
      RT_KEY(bool, "export.overwrite", export_.overwrite, "replace a non-empty output directory"),
  };
}
#undef RT_KEY

// dir/name without std::filesystem, whose out-of-line parts LibTorch's own copy can shadow in a test binary.
std::string path_join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw ConfigError(what);
}

}  // namespace

const char* config_source_name(ConfigSource s) {
  switch (s) {
    case ConfigSource::default_value: return "default";
    case ConfigSource::file: return "file";
    case ConfigSource::command_line: return "command line";
  }
  return "?";
}

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = build_schema();
  return schema;
}

const ConfigKey* config_find_key(std::string_view name) {
  for (const auto& k : config_schema())
    if (k.name == name) return &k;
  return nullptr;
}

Config config_apply(const ConfigValues& values) {
  Config cfg;
  for (const auto& [name, value] : values) {
    const ConfigKey* key = config_find_key(name);
    if (!key) throw ConfigError(value.origin + ": unknown key '" + name + "'");
    try {
      key->parse(cfg, value.text);
    } catch (const ConfigError& e) {
      throw ConfigError(value.origin + ": " + e.what());
    }
  }
  if (cfg.checkpoint.dir.empty()) cfg.checkpoint.dir = path_join(cfg.output_dir, "checkpoints");
  return cfg;
}

std::string config_tokenizer(const Config& cfg) {
  if (cfg.data.tokenizer != "auto") return cfg.data.tokenizer;
  return cfg.model.path.empty() ? "byte" : path_join(cfg.model.path, "tokenizer.json");
}

void config_validate_train(const Config& c) {
  if (c.model.quantize == "nf4" && c.lora.r == 0)
    throw ConfigError(
        "model.quantize=nf4 needs LoRA (lora.r > 0): the 4-bit base is frozen, so full fine-tuning "
        "would train nothing",
        "add --lora.r=16 (QLoRA), or set --model.quantize=none for a full fine-tune");
  require(c.train.activation_offload_host_gib >= 0, "train.activation_offload_host_gib must be >= 0 (0 = automatic)");
  if (c.train.activation_offload && !c.train.activation_checkpointing)
    throw ConfigError(
        "train.activation_offload=true needs train.activation_checkpointing=true: the offload moves the layer inputs "
        "that activation checkpointing keeps, and without it there are none",
        "add --train.activation_checkpointing=true, or drop --train.activation_offload");
  require(c.train.activation_checkpointing_layers >= 0,
          "train.activation_checkpointing_layers must be >= 0 (0 = every layer)");
  if (c.train.activation_checkpointing_layers > 0 && !c.train.activation_checkpointing)
    throw ConfigError("train.activation_checkpointing_layers=" +
                          std::to_string(c.train.activation_checkpointing_layers) +
                          " needs train.activation_checkpointing=true: it says how many layers activation "
                          "checkpointing recomputes",
                      "add --train.activation_checkpointing=true, or drop --train.activation_checkpointing_layers");
  if (!c.train.fp8_matmuls) return;
  if (c.lora.r == 0)
    throw ConfigError(
        "train.fp8_matmuls=true needs LoRA (lora.r > 0): the FP8 matmuls are those of the frozen base, "
        "and a full fine-tune trains the weights they would round",
        "add --lora.r=16, or drop --train.fp8_matmuls");
  if (c.model.quantize != "none")
    throw ConfigError("train.fp8_matmuls=true with model.quantize=" + c.model.quantize +
                          ": the FP8 matmuls quantize a 16-bit base, which a quantized base no longer has",
                      "drop --train.fp8_matmuls, or set --model.quantize=none");
  if (c.train.kernels == "eager")
    throw ConfigError(
        "train.fp8_matmuls=true with train.kernels=eager: the FP8 matmuls belong to the LoRA fast path, "
        "and eager runs the unfused reference",
        "drop --train.fp8_matmuls, or set --train.kernels=fused");
}

void config_validate_for_layers(const Config& c, std::int64_t num_layers) {
  const long n = c.train.activation_checkpointing_layers;
  if (n > num_layers)
    throw ConfigError("train.activation_checkpointing_layers=" + std::to_string(n) + " is more than the model's " +
                          std::to_string(num_layers) + " layers",
                      "use at most " + std::to_string(num_layers) + ", or 0 for every layer");
}

bool fused_loss_on(const TrainConfig& t, bool on_gpu) {
  return t.fused_loss == "true" || (t.fused_loss == "auto" && on_gpu);
}

void config_validate(const Config& c) {
  const auto& m = c.model;
  require(m.hidden_size > 0 && m.num_layers > 0 && m.num_heads > 0 && m.num_kv_heads > 0 && m.intermediate_size > 0 &&
              m.vocab_size > 0 && m.max_seq_len > 0,
          "model shape keys must all be positive");
  require(m.hidden_size % m.num_heads == 0, "model.hidden_size (" + std::to_string(m.hidden_size) +
                                                ") must be a multiple of model.num_heads (" +
                                                std::to_string(m.num_heads) + ")");
  require(m.num_heads % m.num_kv_heads == 0, "model.num_heads (" + std::to_string(m.num_heads) +
                                                 ") must be a multiple of model.num_kv_heads (" +
                                                 std::to_string(m.num_kv_heads) + ")");
  require(c.lora.r >= 0, "lora.r must be >= 0 (0 = full fine-tune)");
  require(c.lora.dropout >= 0 && c.lora.dropout < 1, "lora.dropout must be in [0, 1)");
  const auto& t = c.train;
  require(t.steps > 0, "train.steps must be > 0");
  require(t.micro_batch > 0, "train.micro_batch must be > 0");
  require(t.grad_accum > 0, "train.grad_accum must be > 0");
  require(t.seq_len > 0, "train.seq_len must be > 0");
  if (t.seq_len > m.max_seq_len && m.path.empty())  // prepare checks it too: its rows are the model's sequences
    throw ConfigError("train.seq_len (" + std::to_string(t.seq_len) + ") exceeds model.max_seq_len (" +
                          std::to_string(m.max_seq_len) + ")",
                      "set --model.max_seq_len=" + std::to_string(t.seq_len) +
                          " (or more) as well, or lower --train.seq_len");
  require(t.lr > 0, "train.lr must be > 0");
  require(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1, "train.min_lr_ratio must be in [0, 1]");
  require(t.warmup_steps >= 0, "train.warmup_steps must be >= 0");
  require(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)");
  require(t.grad_clip >= 0, "train.grad_clip must be >= 0 (0 = off)");
  // 0 would divide 0 by 0 for a parameter whose gradient is still all zero (an unused embedding row).
  require(t.eps > 0, "train.eps must be > 0");
  require(t.log_every > 0, "train.log_every must be > 0");
  require(t.profile_steps >= 0 && t.profile_skip >= 0, "train.profile_steps and train.profile_skip must be >= 0");
  if (t.profile_steps > 0 && t.profile_skip + t.profile_steps > t.steps && t.epochs == 0)
    throw ConfigError("train.profile_skip + train.profile_steps (" + std::to_string(t.profile_skip + t.profile_steps) +
                          ") exceed train.steps (" + std::to_string(t.steps) + ")",
                      "lower --train.profile_skip or --train.profile_steps, or raise --train.steps");
  require(t.eval_every >= 0, "train.eval_every must be >= 0");
  require(t.mlp_chunk_tokens >= 0, "train.mlp_chunk_tokens must be >= 0 (0 = the MLP over the whole micro-batch)");
  require(c.data.val_fraction >= 0 && c.data.val_fraction < 1, "data.val_fraction must be in [0, 1)");
  require(c.parallel.comm_timeout_s > 0, "parallel.comm_timeout_s must be > 0");
  require(c.parallel.micro_batches > 0, "parallel.micro_batches must be > 0");
  require(c.generate.max_new_tokens > 0, "generate.max_new_tokens must be > 0");
  require(c.generate.temperature >= 0, "generate.temperature must be >= 0 (0 = greedy)");
  require(c.generate.top_p > 0 && c.generate.top_p <= 1, "generate.top_p must be in (0, 1]");
  require(c.train.epochs >= 0, "train.epochs must be >= 0 (0 = use train.steps)");
  require(c.parallel.stages >= 0, "parallel.stages must be >= 0 (0 = one stage per GPU)");
  require(c.parallel.bucket_mb > 0, "parallel.bucket_mb must be > 0");
  require(c.parallel.reserve_gib >= 0, "parallel.reserve_gib must be >= 0");
  require(c.prepare.shard_rows >= 0, "prepare.shard_rows must be >= 0 (0 = one file)");
  require(c.prepare.threads >= 0, "prepare.threads must be >= 0 (0 = one per CPU)");
  require(c.checkpoint.every_steps >= 0, "checkpoint.every_steps must be >= 0");
  require(c.checkpoint.keep >= 1, "checkpoint.keep must be >= 1");
}

std::uint64_t config_hash(const Config& cfg) {
  Fnv1a h;
  for (const auto& k : config_schema()) h.update(k.name).update("=").update(k.show(cfg)).update("\n");
  return h.value();
}

std::string config_table(const Config& cfg, const ConfigValues& given) {
  std::size_t wk = 3, wv = 5;
  std::vector<std::tuple<std::string, std::string, std::string>> rows;
  for (const auto& k : config_schema()) {
    auto it = given.find(k.name);
    std::string src = it == given.end() ? "default" : it->second.origin;
    rows.emplace_back(k.name, k.show(cfg), src);
    wk = std::max(wk, k.name.size());
    wv = std::max(wv, std::min<std::size_t>(k.show(cfg).size(), 48));
  }
  std::ostringstream os;
  os << std::left << std::setw(static_cast<int>(wk)) << "key"
     << "  " << std::setw(static_cast<int>(wv)) << "value"
     << "  source\n";
  os << std::string(wk, '-') << "  " << std::string(wv, '-') << "  " << std::string(12, '-') << '\n';
  for (const auto& [k, v, s] : rows) {
    os << std::setw(static_cast<int>(wk)) << k << "  " << std::setw(static_cast<int>(wv)) << (v.empty() ? "\"\"" : v)
       << "  " << s << '\n';
  }
  return os.str();
}

}  // namespace ranktune
