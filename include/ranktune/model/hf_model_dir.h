// defines: HfModelDir (the tensors of a Hugging Face model directory, model.path: model.safetensors, or the shards
// named by model.safetensors.index.json), llama_load_weights / llama_from_pretrained (load with every name and shape
// checked) and llama_save_pretrained (config.json + model.safetensors that transformers loads back).
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

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t, std::less<>> where_;
};

// Copies the directory's weights into the model's parameters (converting dtype, moving to their device). Missing and
// unexpected tensors are reported together by name, shapes are checked against the config. Throws ModelDirError.
void llama_load_weights(LlamaImpl& model, const HfModelDir& files);

// config.json + weights of `dir`, on `options`' device and dtype. Throws ModelDirError (config.json's own values:
// ConfigError).
Llama llama_from_pretrained(const std::string& dir, const at::TensorOptions& options = {});

// Writes dir/config.json and dir/model.safetensors with the weights in `dtype`. Refuses a model with LoRA adapters
// attached (merge them with lora_merge, or export the adapter). Its failures stay CheckpointError: it writes the
// export of a training checkpoint.
void llama_save_pretrained(LlamaImpl& model, const std::string& dir, at::ScalarType dtype = at::kBFloat16);

}  // namespace ranktune
