// defines: Config (every setting ranktune reads, grouped by INI section), the schema that names each key, and
// config_validate / config_hash / config_table. Pure: no Boost, MPI or CUDA here (cli.h does the parsing).
// Key naming: `[train] lr = 3e-4` in an INI file is the same setting as `--train.lr=3e-4` on the command line.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ranktune {

struct ParallelConfig {
  std::string mode = "auto";           // auto | single | ddp | balanced
  double comm_timeout_s = 600;         // a collective that takes longer aborts the communicator (exit 6)
  std::string max_memory;              // balanced budgets, "0:70GiB,1:75GiB"; empty = free memory minus reserve
  double reserve_gib = 2.0;            // kept free on every GPU for the CUDA context, allocator slack and NCCL
  int micro_batches = 1;               // balanced: >1 pipelines micro-batches through the stages
  int stages = 0;                      // balanced: pipeline stages; 0 = one per GPU
  std::string stage_threads = "auto";  // balanced: auto | on | off (a host thread issuing each stage's work)
  double bucket_mb = 25;               // DDP gradient bucket size
};

struct ModelConfig {
  std::string path;  // a Hugging Face model directory; empty = build from the shape below with random weights
  int hidden_size = 256;
  int num_layers = 4;
  int num_heads = 8;
  int num_kv_heads = 4;
  int intermediate_size = 688;
  int vocab_size = 259;  // 256 bytes + bos, eos, pad for the byte tokenizer
  int max_seq_len = 256;
  double rope_theta = 10000;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = true;
  std::string quantize = "none";  // none | nf4: the frozen base linears held in bitsandbytes' 4-bit NF4 (QLoRA)
};

struct LoraConfig {
  int r = 0;  // 0 = no LoRA (full fine-tune)
  double alpha = 16;
  double dropout = 0;
  std::string target_modules = "q,k,v,o,gate,up,down";
};

struct TrainConfig {
  long steps = 200;
  double epochs = 0;  // > 0: train this many passes over the training rows instead of `steps`
  int micro_batch = 8;
  int grad_accum = 1;
  int seq_len = 128;
  double lr = 1e-3;
  double min_lr_ratio = 0.1;
  long warmup_steps = 20;
  std::string schedule = "cosine";  // cosine | linear | constant
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;
  bool activation_checkpointing = false;
  long activation_checkpointing_layers = 0;  // > 0: only this many recompute (activation_checkpointing_layers.h)
  bool activation_offload = false;           // the layer inputs activation checkpointing keeps, in pinned host memory
  double activation_offload_host_gib = 0;    // the most those hold per rank; 0 = from the host's available memory
  long mlp_chunk_tokens = 0;                 // > 0: the MLP in slices of this many tokens (model/tiled_mlp.h)
  std::string precision = "auto";            // auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
  bool flash_varlen = true;                  // packed documents: the flash kernel's variable-length form on GPU
  std::string kernels = "fused";    // fused | eager (the unfused reference ops: transformers' and PEFT's order)
  std::string fused_loss = "auto";  // auto (fused on GPU, the unfused reference on CPU) | true | false
  bool fp8_matmuls = false;         // LoRA's frozen base matmuls in FP8 e4m3 with row-wise scales (kernels/fp8.h)
  bool adamw_one_pass = true;       // bf16/fp16 parameters with fp32 masters step in one kernel (kernels/adamw.h)
  bool queue_ahead = true;          // the next step's forward and backward queued before this step's loss is read
  long eval_every = 50;
  long log_every = 10;
  long profile_steps = 0;  // > 0: Kineto profile of this many steps into output_dir (train/profile.h)
  long profile_skip = 5;   // warm-up steps before the profiled ones
};

struct DataConfig {
  std::string path;  // text/JSONL files (comma list), or a prepared .h5 / shard directory; empty = generated corpus
  std::string tokenizer = "auto";  // auto (model.path's tokenizer.json, else byte) | byte | <tokenizer.json path>
  double val_fraction = 0.05;
  std::string on_bad_record = "error";         // error | skip (skipped records are counted and reported)
  std::string overlong = "split";              // a document longer than a row: split | truncate
  std::string packing = "documents";           // documents (start a new row rather than cut one) | fill
  std::string packing_attention = "isolated";  // isolated (a packed document attends to itself only) | shared
  std::string chat_template = "auto";          // auto | template | llama3 | llama2 | mistral | chatml | plain
};

struct PrepareConfig {
  std::string output;   // OUT.h5, or the directory of shards when shard_rows > 0
  long shard_rows = 0;  // 0 = one file
  int threads = 0;      // records tokenized at once; 0 = the CPU threads this process may use
};

struct CheckpointConfig {
  std::string dir;       // empty (the default) = <output_dir>/checkpoints, filled in by config_apply
  long every_steps = 0;  // 0 = only at the end and on preemption
  bool at_end = true;    // save when the last step is done (benchmarks turn it off; a stop signal still saves)
  int keep = 3;
  std::string file_locking = "best-effort";  // best-effort | true | false
  bool async = false;  // periodic saves written by a background thread after a copy to host memory
};

struct GenerateConfig {
  std::string prompt;
  std::string prompt_file;  // the prompt read from a file (a rendered chat template), instead of prompt
  int max_new_tokens = 64;
  double temperature = 0;  // 0 = greedy
  double top_p = 1.0;
};

struct ExportConfig {
  std::string format = "hf";   // hf (directory) | gguf (one llama.cpp file)
  std::string dtype = "bf16";  // bf16 | fp16 | fp32 | q8_0 (gguf only): the exported weights' dtype
  bool merge = false;          // LoRA: fold the adapters into the base and write a full model instead of an adapter
  bool overwrite = false;      // replace a non-empty output directory
};

struct Config {
  std::string device = "auto";  // auto (a GPU when one is visible, else the CPU) | cuda (a GPU or an error) | cpu
  long seed = 1234;
  std::string resume = "none";  // none | auto | PATH
  std::string output_dir = "runs/default";
  ParallelConfig parallel;
  ModelConfig model;
  LoraConfig lora;
  TrainConfig train;
  DataConfig data;
  PrepareConfig prepare;
  CheckpointConfig checkpoint;
  GenerateConfig generate;
  ExportConfig export_;  // `export` is a C++ keyword; the section is [export]
};

// Where an effective value came from.
enum class ConfigSource { default_value, file, command_line };
const char* config_source_name(ConfigSource s);

// One settable key: its dotted name, help text, a parser that writes it into a Config (throws ConfigError on a bad
// value) and a printer that reads it back.
struct ConfigKey {
  std::string name;
  std::string help;
  std::function<void(Config&, std::string_view)> parse;
  std::function<std::string(const Config&)> show;
};

const std::vector<ConfigKey>& config_schema();
const ConfigKey* config_find_key(std::string_view name);

// A value as given by the user, before conversion.
struct ConfigValue {
  std::string text;
  ConfigSource source = ConfigSource::default_value;
  std::string origin;  // "configs/x.ini:12" or "command line"
};
using ConfigValues = std::map<std::string, ConfigValue>;

// Applies the given values over the defaults. Errors name the key, the value, where it came from and what is allowed.
// An empty checkpoint.dir becomes <output_dir>/checkpoints, so that a run's checkpoints follow its output_dir.
Config config_apply(const ConfigValues& values);

// data.tokenizer as tokenizer_load takes it: `auto` is model.path's tokenizer.json, or `byte` without a model
// directory (commands check the file and log the choice: app/tokenizer_choice.h).
std::string config_tokenizer(const Config& cfg);

// Cross-field checks (positive sizes, heads divide hidden size, ...). Throws ConfigError.
// Whether train.fused_loss runs the fused linear cross-entropy for a run computing on a GPU (on_gpu) or the CPU: the
// one rule for the model (app/cmd_train.cpp) and the memory planner (plan/layer_cost.h).
bool fused_loss_on(const TrainConfig& t, bool on_gpu);

void config_validate(const Config& cfg);
// What only a training run (`train`, and `plan`, which plans one) must satisfy, on top of config_validate: settings
// that describe what trains (model.quantize=nf4 needs LoRA), which export and generate read from the checkpoint
// instead. Throws ConfigError.
void config_validate_train(const Config& cfg);
// The checks of config_validate_train that need the model's layer count (a model directory's config.json is read
// first): train.activation_checkpointing_layers at most num_layers. Throws ConfigError.
void config_validate_for_layers(const Config& cfg, std::int64_t num_layers);

// FNV-1a 64 over "key=value\n" in schema order: equal on every rank iff the effective configs are equal.
std::uint64_t config_hash(const Config& cfg);

// The effective config as an aligned table: key | value | source.
std::string config_table(const Config& cfg, const ConfigValues& given);

}  // namespace ranktune
