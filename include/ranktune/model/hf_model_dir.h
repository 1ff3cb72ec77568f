// defines: HfModelDir (the tensors of a Hugging Face model directory, model.path: model.safetensors, or the shards
// named by model.safetensors.index.json), hf_model_config / hf_model_dir_check (config.json checked against the
// safetensors headers before anything is allocated from it), llama_load_weights / llama_from_pretrained (load with
// every name and shape checked) and llama_save_pretrained (config.json + model.safetensors that transformers reads).
// A model directory is an input the user names, not a training checkpoint (io/): its faults are ModelDirError (exit 2).
// Our parameter names are transformers' (llama.h); a tied model's lm_head.weight and old rotary_emb.inv_freq buffers
// are the only names skipped.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/model/llama.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {

class HfModelDir {
 public:
  // Opens and validates every file; a missing directory or shard, a name the index places in a shard that lacks it, or
  // a damaged file is a ModelDirError naming it.
  explicit HfModelDir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  const SafetensorsEntry* find(std::string_view name) const;
  at::Tensor tensor(std::string_view name) const;  // CPU, over the mapping
  const std::string& file_of(std::string_view name) const;
  // model.safetensors, or model.safetensors.index.json for a sharded model: what messages name for "the weights".
  const std::string& weights_file() const { return weights_file_; }

 private:
  std::string dir_;
  std::string weights_file_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t, std::less<>> where_;
};

// Checks `c` (read from files.dir()'s config.json) against the safetensors headers alone: the layer count, then the
// name, shape and dtype of every tensor the config implies. A mismatch is a ModelDirError naming config.json's field
// with its value and the tensor with its file, e.g. `vocab_size = 1000000000000 in D/config.json does not match
// D/model.safetensors: model.embed_tokens.weight is [96, 64], not [1000000000000, 64]`. The headers were checked
// against the files' sizes, so a config that passes cannot make a model larger than its weights: nothing is allocated
// from a corrupted config.json.
void hf_model_dir_check(const LlamaConfig& c, const HfModelDir& files);

// config.json of the model directory `dir`, checked by hf_model_dir_check: what memory estimates and the model are
// built from. Throws ModelDirError (config.json's own values: ConfigError).
LlamaConfig hf_model_config(const std::string& dir);
// The same without the check, for a loader that opens the directory anyway and calls hf_model_dir_check with it.
LlamaConfig hf_model_config_unchecked(const std::string& dir);

// Copies the directory's weights into the model's parameters (converting dtype, moving to their device). Missing and
// unexpected tensors are reported together by name, shapes are checked against the config (hf_model_dir_check).
// Throws ModelDirError.
void llama_load_weights(LlamaImpl& model, const HfModelDir& files);

// config.json + weights of `dir`, on `options`' device and dtype. Throws ModelDirError (config.json's own values:
// ConfigError; a bitsandbytes 4-bit directory too: llama_from_pretrained_quantized of model/quantize.h loads it).
Llama llama_from_pretrained(const std::string& dir, const at::TensorOptions& options = {});

// Writes dir/config.json and dir/model.safetensors with the weights in `dtype`. Refuses a model with LoRA adapters
// attached (merge them with lora_merge, or export the adapter). Its failures stay CheckpointError: it writes the
// export of a training checkpoint.
void llama_save_pretrained(LlamaImpl& model, const std::string& dir, at::ScalarType dtype = at::kBFloat16);

}  // namespace ranktune
