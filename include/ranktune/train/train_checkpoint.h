// defines: what a training run puts into a checkpoint and takes back on resume (RunPosition, ModelRecord,
// train_state_capture, train_state_restore). Trainable weights and optimizer state (moments, step counts, fp32
// masters) are replicated in DDP, so rank 0 alone writes them; every rank writes its RNG states (CPU, and CUDA when
// it trains on a GPU) and the run position. The ModelRecord makes a checkpoint self-describing for `ranktune export`;
// a LoRA checkpoint refuses to resume on another base.
#pragma once

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/data/sampler.h"
#include "ranktune/io/checkpoint.h"
#include "ranktune/train/optimizer.h"

namespace ranktune {

class LlamaImpl;

struct RunPosition {
  long step = 0;         // optimizer steps done
  long tokens = 0;       // tokens trained on, all ranks
  SamplerCursor cursor;  // where the data order continues
};

// The model the saved weights belong to, as root attributes of every rank file (`base_model`, `model.config`,
// `model.path`, `model.lora`, `data.tokenizer`): enough to rebuild it without the run's config. `config` adds the
// run's whole effective configuration, so a checkpoint read alone (h5py, `ranktune checkpoint inspect`) says how it
// was trained.
struct ModelRecord {
  std::string base_identity;  // base_identity_text: where the base came from, hashes of its config and tensor index
  std::string config_json;    // the model's config.json (llama_config_to_json)
  std::string base_path;      // --model.path; empty for a random initialisation
  LoraConfig lora;            // lora.r == 0: a full fine-tune
  std::string tokenizer;      // the tokenizer.json the run read; empty for the byte tokenizer
  std::string run_config;     // every key of the effective config as INI text; empty in older checkpoints
};

// config_json: llama_config_to_json of the model being trained.
ModelRecord model_record_make(const Config& cfg, std::string config_json, std::string base_identity);
// Reads the record back; a checkpoint written before the record existed is a CheckpointError saying so.
ModelRecord model_record_read(const CheckpointState& st, const std::string& where);

// The `base_model` identity: "<origin>, config <hex>" plus ", tensors <hex>" when the base has a tensor index.
// origin: --model.path as given, or "random init, seed N" (whose tensors follow from its config, so no index);
// the hashes are FNV-1a 64 of the model's config.json and of its tensor index (sorted names, dtypes, shapes).
std::string base_identity_text(const std::string& origin, std::uint64_t config_hash,
                               std::optional<std::uint64_t> tensor_index_hash);
// True when a checkpoint's recorded base is this run's. An identity recorded before the tensor index was part of it
// (no ", tensors") is compared with this run's without its index, so those LoRA checkpoints still resume.
bool base_identity_same(const std::string& saved, const std::string& now);
// This run's base_identity_text: model.path (or "random init, seed N" when it is empty), the hash of `model`'s
// config.json and, for a model directory, of its tensor index, so that the same path holding other tensors under the
// same config.json is another base. Reads the safetensors headers again, no tensor.
std::string run_base_identity(const Config& cfg, const LlamaImpl& model);

// The trained parameters in a state with weights (rank 0's), by model name, in fp32: the optimizer's master copy
// where the run kept one (a bf16 parameter), else the saved weight.
std::map<std::string, at::Tensor> trained_weights(const CheckpointState& st);

// device: where the model trains; a CUDA device adds that device's generator state (`rng.cuda`) to `rng.cpu`.
// other_gpus: balanced mode's further stage devices, each saved as `rng.cuda_gpu<index>`.
CheckpointState train_state_capture(const NamedTensors& params, const AdamW& opt, const RunPosition& pos,
                                    bool write_replicated, const ModelRecord& record, const c10::Device& device,
                                    const std::vector<int>& other_gpus = {});

// The generator states a checkpoint records, by their names there: `rng.cpu`, `rng.cuda` (device's, when it is a
// CUDA device), `rng.cuda_gpu<index>` for each of other_gpus. rng_set puts such states back into the generators (the
// ones named; a CUDA state only when device is a CUDA device). The trainer takes them before it queues a step ahead,
// so that a stop agreed at the boundary saves the generators as they were there.
using RngBlobs = std::map<std::string, std::vector<std::uint8_t>>;
RngBlobs rng_capture(const c10::Device& device, const std::vector<int>& other_gpus = {});
void rng_set(const RngBlobs& blobs, const c10::Device& device, const std::vector<int>& other_gpus = {});

// Compares the configuration the checkpoint recorded (its `config` attribute) with this run's `cfg` (config_changes):
// rank 0 prints the settings that changed in one line; a change that leaves the saved tensors meaningless (another
// LoRA rank, a random-init model's shape, another tokenizer) is a ConfigError (exit 2) naming each such key with both
// values and the fix. A checkpoint that records no configuration (an older ranktune) gets a note and passes.
void resume_check_config(const LoadedCheckpoint& ck, const Config& cfg);

// Copies the saved weights and optimizer state into params/opt (they must match by name and shape: a mismatch is a
// CheckpointError naming the tensor), restores this rank's RNG when its own file exists, returns the position.
// RNG: the CPU generator always; the CUDA generator of `device` when both the checkpoint and this run are on CUDA.
// Across kinds (a GPU checkpoint resumed on CPU or the reverse) the other kind's state is left as seeded, and rank 0
// says so once: such a continuation is not bit-identical anyway.
// other_gpus: as for capture; a saved `rng.cuda_gpu<index>` is restored into that device when the run has it.
RunPosition train_state_restore(const LoadedCheckpoint& ck, const NamedTensors& params, AdamW& opt,
                                const std::string& base_identity, bool require_same_base, const c10::Device& device,
                                const std::vector<int>& other_gpus = {});

}  // namespace ranktune
